"""``agentwatch batch FILE --redis URL --out FILE``: the tasks go to the Redis queue,
``agentwatch worker`` processes run them, and this process writes each result to
``--out`` as it arrives (fsynced, as the local batch does), with the same progress bar,
signals, summary and exit codes.

Resumable as the local batch is: the batch's id is the results file's (host and path),
so a rerun follows the same batch in Redis; it writes the results that arrived while
nothing followed, and enqueues only what has no result (enqueueing is idempotent: a
task still queued or running is not added twice). While Redis is down, calls are
retried with backoff; when Redis comes back without the batch (restarted with no
persistence), every task with no result in the file is enqueued again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import socket
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from rich.console import Console

from agentwatch.telemetry import Telemetry
from agentwatch.telemetry.names import AGENTWATCH_BATCH_ID, SPAN_BATCH

from ..batch.jsonl_sink import JsonlResultSink
from ..batch.processor import BatchOptions, BatchSummary
from ..batch.redis_queue import CANCELLED, DRAINING, RedisBatch, RedisClient
from ..batch.sink import Record
from ..batch.task import FINAL, RETRYABLE, Task, TaskStatus
from .progress import install_signals, progress_bar

log = logging.getLogger(__name__)

LOST_CHECK_EVERY = 2.0  # s between checks that Redis still has the batch
NO_WORKER_HINT_AFTER = 10.0  # s with no task of the batch taken: say how to start workers


def batch_id_for(out: Path) -> str:
    """One batch per results file: a rerun with the same --out follows the same batch."""
    where = f"{socket.gethostname()}:{out.resolve()}"
    return hashlib.sha256(where.encode()).hexdigest()[:16]


async def run_redis_batch(
    tasks: list[Task],
    out: Path,
    options: BatchOptions,
    url: str,
    telemetry: Telemetry,
    console: Console,
) -> tuple[BatchSummary, bool]:
    """Enqueue ``tasks`` on Redis, write their results to ``out`` as they arrive; True
    if it was stopped early (SIGINT/SIGTERM). With a budget, the batch is drained once
    the results (those in ``out`` from before included) have spent it: every worker
    stops taking its tasks, the running ones finish, the rest stay unrun (resumable)."""
    started = time.monotonic()
    sink = JsonlResultSink(out)
    kept = await sink.open()
    client = RedisClient(url, telemetry)
    batch = RedisBatch(client, batch_id_for(out))
    summary = BatchSummary(batch.batch_id)
    try:
        attributes = {AGENTWATCH_BATCH_ID: batch.batch_id}
        with (
            telemetry.start_operation(SPAN_BATCH, attributes) as span,
            progress_bar(console, len(tasks)) as on_progress,
        ):
            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier, context=span.context)
            follower = _Follower(batch, sink, tasks, kept, options, on_progress, summary)
            loop = asyncio.get_running_loop()
            stopped = install_signals(loop, follower.drain, follower.cancel, console)
            try:
                await follower.run(carrier.get("traceparent"))
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
    finally:
        await client.close()
        await sink.close()
    summary.wall_time = time.monotonic() - started
    return summary, stopped["yes"]


class _Follower:
    """Enqueues the batch and writes its results until each task has one (or the batch
    was drained or cancelled)."""

    def __init__(
        self,
        batch: RedisBatch,
        sink: JsonlResultSink,
        tasks: list[Task],
        kept: Mapping[str, Record],
        options: BatchOptions,
        on_progress: Callable[[Task], None],
        summary: BatchSummary,
    ) -> None:
        self.batch = batch
        self.sink = sink
        self.options = options
        self.on_progress = on_progress
        self.summary = summary
        self.tasks = {task.id: task for task in tasks}
        self.todo: dict[str, Task] = {}
        self.retry: list[str] = []
        for task in tasks:
            previous = kept.get(task.id)
            status = previous.get("status") if previous is not None else None
            if status in FINAL and not (options.retry_failed and status in RETRYABLE):
                task.status = TaskStatus(str(status))
                summary.skipped += 1
                summary.cost_usd += _cost(previous)
                self.on_progress(task)
                continue
            if status in RETRYABLE:
                self.retry.append(task.id)
                summary.cost_usd += _cost(previous)  # spent already: the budget counts it
            self.todo[task.id] = task
        summary.retried = len(self.retry)
        self._state: str | None = None  # draining or cancelled, once asked
        self._running: asyncio.Task[Any] | None = None
        self._spent()

    def _spent(self) -> None:
        """The budget spent: drain (no task of this batch starts anywhere any more)."""
        budget = self.options.budget_usd
        if budget is not None and self.summary.cost_usd >= budget and self._state is None:
            self.summary.budget_exceeded = True
            self._state = DRAINING

    def drain(self) -> None:
        self._state = DRAINING

    def cancel(self) -> None:
        """Stop following now, even while Redis does not answer (run() returns)."""
        self._state = CANCELLED
        if self._running is not None:
            self._running.cancel()

    async def run(self, traceparent: str | None) -> None:
        """Follow the batch until every task has a result, or it is stopped; on a
        cancel, the workers are told (within 2 s: Redis may be down)."""
        self._running = asyncio.current_task()
        try:
            await self._follow(traceparent)
        except asyncio.CancelledError:
            if self._state != CANCELLED or self._running is None:
                raise
            self._running.uncancel()
            with suppress(Exception, TimeoutError):
                async with asyncio.timeout(2):
                    await self.batch.set_state(CANCELLED)
        finally:
            self._running = None
        for task in self.tasks.values():
            status = str(task.status) if task.status in FINAL else str(TaskStatus.CANCELLED)
            self.summary.counts[status] = self.summary.counts.get(status, 0) + 1

    async def _follow(self, traceparent: str | None) -> None:
        batch = self.batch
        await batch.start(retry=self.retry)
        if not self.summary.budget_exceeded:  # spent by an earlier run: nothing starts
            await batch.enqueue(self.todo.values(), self.options.task_timeout, traceparent)
        told = None
        checked = started = time.monotonic()
        hinted = False
        while self.todo:  # bounded: every task ends with a result, or the batch is stopped
            if self._state != told:
                told = self._state
                assert told is not None
                await batch.set_state(told)
            if told == CANCELLED or (told == DRAINING and await batch.running() == 0):
                break
            again = []
            for task_id, record in await batch.follow(block_ms=200 if told else 1000):
                task = self.todo.get(task_id)
                if task is None:
                    continue  # written already (a result from before this run, or a retry)
                if record is None or record.get("status") not in FINAL:
                    again.append(task)  # dropped from the queue while not drained
                    continue
                await self.sink.add(record)
                self.summary.cost_usd += _cost(record)
                self._spent()
                del self.todo[task_id]
                task.status = TaskStatus(str(record["status"]))
                self.on_progress(task)
            if again and told is None:
                await batch.enqueue(again, self.options.task_timeout, traceparent)
            if time.monotonic() - checked >= LOST_CHECK_EVERY:
                checked = time.monotonic()
                if told is None and await batch.lost():
                    await self._recover(traceparent)
                if not hinted and checked - started >= NO_WORKER_HINT_AFTER:
                    hinted = await self._hint_if_no_worker()
        if not self.todo:
            await batch.ended()

    async def _hint_if_no_worker(self) -> bool:
        """Once, when nothing of the batch was taken yet: how to start a worker."""
        if len(self.todo) < len(self.tasks) - self.summary.skipped or await self.batch.running():
            return True
        log.warning(
            "no task of batch %s has been taken yet: is an `agentwatch worker --redis URL` "
            "running against this Redis?",
            self.batch.batch_id,
        )
        return True

    async def _recover(self, traceparent: str | None) -> None:
        """Redis came back without the batch: enqueue again what has no result."""
        await self.batch.start()
        added = await self.batch.enqueue(self.todo.values(), self.options.task_timeout, traceparent)
        log.warning(
            "Redis lost batch %s (restarted without its data?): enqueued its %d unfinished "
            "task(s) again",
            self.batch.batch_id,
            added,
        )


def _cost(record: Record | None) -> float:
    """What a record says its task cost (its ``cost_usd``; none: 0)."""
    value = None if record is None else record.get("cost_usd")
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return 0.0
