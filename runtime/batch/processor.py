"""``BatchProcessor``: a priority queue, N workers, a concurrency limit, per-task timeouts.

Lower priority numbers run first, first-in first-out within a priority. Each task is a
``batch_task`` span under one ``batch`` span, and the ``agentwatch_batch_*`` metrics
move live: queue depth and tasks in progress (gauges), queue wait by priority, outcomes
and work time by status. With a ``ResultStore`` every finished task is appended to a
JSONL file, and tasks already in it are skipped: a batch killed part-way and started
again finishes every task exactly once. ``drain()`` (wired to SIGTERM/SIGINT by the
CLI) stops taking tasks and lets the running ones finish or time out; ``cancel()``
stops one task or all of them.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from agentwatch.telemetry import Telemetry
from agentwatch.telemetry.names import AGENTWATCH_BATCH_ID

from .store import ResultStore
from .task import FINAL, Task, TaskStatus, check_unique

Work = Callable[[Task], Awaitable[Any]]
Progress = Callable[[Task], None]


@dataclass(frozen=True, slots=True)
class BatchOptions:
    workers: int = 5
    concurrency: int | None = None  # at most this many tasks at once (default: workers)
    task_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.task_timeout is not None and not self.task_timeout > 0:
            raise ValueError("task_timeout must be positive")


@dataclass(slots=True)
class BatchSummary:
    batch_id: str
    counts: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    wall_time: float = 0.0
    durations: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.durations:
            return 0.0
        ordered = sorted(self.durations)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class BatchProcessor:
    def __init__(
        self,
        work: Work,
        telemetry: Telemetry,
        options: BatchOptions | None = None,
        *,
        store: ResultStore | None = None,
        on_progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
        batch_id: str | None = None,
    ) -> None:
        self.work = work
        self.telemetry = telemetry
        self.options = options or BatchOptions()
        self.store = store
        self.on_progress = on_progress
        self.clock = clock
        self.batch_id = batch_id or uuid.uuid4().hex[:16]
        self.tasks: dict[str, Task] = {}
        self._queue: asyncio.PriorityQueue[tuple[int, int, float, Task]] = asyncio.PriorityQueue()
        self._running: dict[str, asyncio.Task[Any]] = {}  # task id -> the worker running it
        self._cancelled: set[str] = set()
        self._draining = False
        self._batch_cancelled = False  # set when the run itself is torn down
        self._semaphore = asyncio.Semaphore(self.options.concurrency or self.options.workers)
        self._order = itertools.count()

    # -- control -----------------------------------------------------------------------
    def drain(self) -> None:
        """Take no more tasks; the running ones finish (or time out)."""
        self._draining = True
        self._cancel_queued()

    def cancel(self, task_id: str | None = None) -> None:
        """Cancel one task (queued or running), or with no id the whole batch."""
        if task_id is None:
            self._draining = True
            self._cancel_queued()
            self._cancelled.update(self._running)
            for worker in self._running.values():
                worker.cancel()  # each worker records its task as cancelled and stops
            return
        self._cancelled.add(task_id)
        one = self._running.get(task_id)
        if one is not None:
            one.cancel()

    def _cancel_queued(self) -> None:
        removed = 0
        while not self._queue.empty():
            *_, task = self._queue.get_nowait()
            self._queue.task_done()
            removed += 1
            self._end(task, TaskStatus.CANCELLED, None)
        # The gauge is shared by every batch of the process: take out only ours.
        self.telemetry.metrics.batch_queue_depth.dec(removed)

    # -- running -----------------------------------------------------------------------
    async def run(self, tasks: Iterable[Task]) -> BatchSummary:
        """Run ``tasks`` (ids unique, else nothing starts) and return the summary."""
        todo = check_unique(tasks)
        summary = BatchSummary(self.batch_id)
        started = self.clock()
        if self.store is not None:
            await self.store.open()
        done = self.store.done if self.store is not None else {}
        depth = self.telemetry.metrics.batch_queue_depth
        now = self.clock()
        for task in todo:
            self.tasks[task.id] = task
            previous = done.get(task.id)
            if previous is not None and previous.get("status") in FINAL:
                task.status = TaskStatus(previous["status"])
                task.result, task.error = previous.get("result"), previous.get("error")
                summary.skipped += 1
                if self.on_progress is not None:
                    self.on_progress(task)
                continue
            self._queue.put_nowait((task.priority, next(self._order), now, task))
        depth.inc(self._queue.qsize())
        batch_span = self.telemetry.start_operation("batch", {AGENTWATCH_BATCH_ID: self.batch_id})
        context = batch_span.context
        workers = [
            asyncio.create_task(self._worker(context, summary), name=f"batch-worker-{i}")
            for i in range(self.options.workers)
        ]
        try:
            await asyncio.gather(*workers)
        except BaseException as exc:
            self._batch_cancelled = True
            for worker in workers:
                worker.cancel()
            with suppress(BaseException):
                await asyncio.gather(*workers, return_exceptions=True)
            self._cancel_queued()
            batch_span.end(exc)
            raise
        finally:
            if self.store is not None:
                await self.store.close()
        batch_span.stop()
        summary.wall_time = self.clock() - started
        for task in self.tasks.values():
            summary.counts[str(task.status)] = summary.counts.get(str(task.status), 0) + 1
        return summary

    async def _worker(self, context: Any, summary: BatchSummary) -> None:
        metrics = self.telemetry.metrics
        while not self._draining:
            try:
                _, _, enqueued_at, task = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            metrics.batch_queue_depth.dec()
            try:
                if task.id in self._cancelled:
                    self._end(task, TaskStatus.CANCELLED, None)
                    continue
                async with self._semaphore:
                    await self._one(task, self.clock() - enqueued_at, context, summary)
            finally:
                self._queue.task_done()

    async def _one(self, task: Task, wait: float, context: Any, summary: BatchSummary) -> None:
        metrics = self.telemetry.metrics
        invocation = self.telemetry.batch_task(
            self.batch_id, task.id, task.priority, wait, parent=context
        )
        task.status = TaskStatus.PROCESSING
        metrics.batch_in_progress.inc()
        started = self.clock()
        worker = asyncio.current_task()
        assert worker is not None
        self._running[task.id] = worker  # cancel(task_id) cancels this worker's await
        status: TaskStatus = TaskStatus.COMPLETED
        error: BaseException | None = None
        invocation.activate()
        try:
            if self.options.task_timeout is None:
                task.result = await self.work(task)
            else:
                async with asyncio.timeout(self.options.task_timeout):
                    task.result = await self.work(task)
        except TimeoutError as exc:
            status, error = TaskStatus.TIMED_OUT, exc
            task.error = f"timed out after {self.options.task_timeout:g} s"
        except asyncio.CancelledError as exc:
            if task.id not in self._cancelled or self._batch_cancelled:
                raise  # the whole batch is being torn down
            worker.uncancel()  # only this task was cancelled: the worker goes on
            status, error = TaskStatus.CANCELLED, exc
        except Exception as exc:
            status, error = TaskStatus.FAILED, exc
        finally:
            invocation.deactivate()
            self._running.pop(task.id, None)
            metrics.batch_in_progress.dec()
        summary.durations.append(self.clock() - started)
        invocation.finish(status, error)
        self._end(task, status, error)

    def _end(self, task: Task, status: TaskStatus, error: BaseException | None) -> None:
        task.status = status
        if error is not None and status is TaskStatus.FAILED:
            task.error = f"{type(error).__name__}: {error}"[:2000]
        if status in FINAL and self.store is not None:
            self.store.add(task.record())
        if self.on_progress is not None:
            self.on_progress(task)
