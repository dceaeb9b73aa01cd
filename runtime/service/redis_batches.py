"""``/v1/batches`` on Redis, when ``AGENTWATCH_REDIS_URL`` is set (docs/scale-out.md).

A batch posted to any replica goes to the Redis queue (runtime/batch/redis_queue.py);
its summary and its result pages are read from Redis, so any replica answers for it and
it survives the restart of the one that took it. The tasks are run by every replica
that works the queue (``AGENTWATCH_REDIS_CONCURRENCY`` tasks at once each, default 8; 0:
this one does not) and by any ``agentwatch worker``. The routes and answers are those of
batches.py; what differs: the summary's ``done`` counts results (a dropped task has
none), a cancelled batch is ``cancelled`` at once (its running tasks are cancelled by
their workers within a second), and the per-process limits on running batches do not
apply (the batches are not this process's; ``workers`` is ignored: the workers'
concurrency decides). ``budget_usd`` is kept in Redis: each attempt's record written
adds its ``cost_usd`` to the batch's ``spent_usd`` (the result script: once per
attempt), and the batch that reaches its budget is ``spent``: no worker starts another
of its tasks (each ends cancelled, "not run: the batch's budget ... was spent"), the
running ones finish, and it finishes with ``budget_exceeded``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any, Final

from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agentwatch.telemetry import Telemetry
from agentwatch.telemetry.names import AGENTWATCH_BATCH_ID, SPAN_BATCH

from ..agents.agent import Agent
from ..batch.processor import BatchOptions, BatchProcessor
from ..batch.redis_queue import (
    CANCELLED,
    DRAINING,
    QueueOptions,
    RedisBatch,
    RedisClient,
)
from ..batch.redis_worker import RedisTaskSource
from ..batch.task import Task, TaskStatus
from ..http.jsonpolicy import ApiError

RUNNING: Final = "running"
FINISHED: Final = "finished"
CANCELLING: Final = "cancelling"
DRAIN_SECONDS: Final = 10.0  # shutting down: running tasks get this long, then go back
REDIS_WAIT_SECONDS: Final = 10.0  # a request waits this long for Redis, then 503
REDIS_DOWN: Final = "redis_unavailable"


@asynccontextmanager
async def _answering() -> AsyncIterator[None]:
    """A request waits at most ``REDIS_WAIT_SECONDS`` for Redis (its calls are retried
    with backoff meanwhile), then gets 503 ``redis_unavailable`` with Retry-After."""
    try:
        async with asyncio.timeout(REDIS_WAIT_SECONDS):
            yield
    except TimeoutError:
        raise ApiError(
            503,
            REDIS_DOWN,
            "Redis (AGENTWATCH_REDIS_URL) does not answer; retry later.",
            headers={"Retry-After": "5"},
        ) from None


class RedisBatches:
    """The batches of the Redis queue, as the routes see them. Each method waits for
    Redis at most ``REDIS_WAIT_SECONDS`` (then 503 ``redis_unavailable``)."""

    def __init__(self, client: RedisClient, telemetry: Telemetry) -> None:
        self.client = client
        self.telemetry = telemetry

    async def submit(
        self, tasks: list[Task], options: BatchOptions, budget_warning: str | None = None
    ) -> str:
        """Enqueue a new batch; its id. Its ``batch`` span is the parent of its tasks'."""
        batch = RedisBatch(self.client, uuid.uuid4().hex[:16])
        attributes = {AGENTWATCH_BATCH_ID: batch.batch_id}
        async with _answering():
            with self.telemetry.start_operation(SPAN_BATCH, attributes) as span:
                carrier: dict[str, str] = {}
                TraceContextTextMapPropagator().inject(carrier, context=span.context)
                await batch.start(
                    total=len(tasks),
                    budget_usd=options.budget_usd,
                    budget_warning=budget_warning,
                )
                await batch.enqueue(tasks, options.task_timeout, carrier.get("traceparent"))
        return batch.batch_id

    async def view(self, batch_id: str) -> dict[str, Any] | None:
        """The summary of batches.py's ``BatchRecord.view``; None: no such batch."""
        async with _answering():
            got = await RedisBatch(self.client, batch_id).summary()
        if got is None:
            return None
        meta, counts = got
        spent, budget = _number(meta.get("spent_usd")), _number(meta.get("budget_usd"))
        done = counts.pop("_done", 0)
        total = int(meta.get("total", done))
        state = _state(meta)
        if state == RUNNING and done < total:
            counts[str(TaskStatus.PENDING)] = total - done
        return {
            "id": batch_id,
            "state": state,
            "total": total,
            "done": done,
            "counts": counts,
            "created_at": _timestamp(meta.get("started")),
            "finished_at": _timestamp(meta.get("finished")),
            "results_url": f"/v1/batches/{batch_id}/results",
            # so far, every attempt's; null: none of them priced (yet)
            "cost_usd": spent,
            "budget_usd": budget,
            "budget_exceeded": spent is not None and budget is not None and spent >= budget,
            "budget_warning": meta.get("budget_warning"),
        }

    async def results(
        self, batch_id: str, query: Mapping[str, str], limit: int
    ) -> dict[str, Any] | None:
        """One page, in the order the results were written; the cursor is the last
        entry read of the batch's ``done`` stream."""
        batch = RedisBatch(self.client, batch_id)
        after = "0" if query.get("cursor") is None else _after(batch_id, query["cursor"])
        async with _answering():
            got = await batch.summary()
            if got is None:
                return None
            state = _state(got[0])  # read before the page: a page is never the last too soon
            page, last, ended = await batch.page(after, limit)
        more = not ended or state == RUNNING
        return {
            "id": batch_id,
            "state": state,
            "results": page,
            "next_cursor": _cursor(batch_id, last) if more else None,
        }

    async def cancel(self, batch_id: str) -> dict[str, Any] | None:
        """``DELETE``: the summary when it has ended, else cancel it (None: no batch)."""
        view = await self.view(batch_id)
        if view is None or view["state"] != RUNNING:
            return view
        async with _answering():
            await RedisBatch(self.client, batch_id).set_state(CANCELLED)
        return {"id": batch_id, "state": CANCELLING}


def _state(meta: Mapping[str, str]) -> str:
    if meta.get("finished"):
        return FINISHED
    if meta.get("state") in (CANCELLED, DRAINING):
        return CANCELLED
    return RUNNING


def _number(raw: str | None) -> float | None:
    return None if raw is None else float(raw)


def _timestamp(raw: str | None) -> str | None:
    if not raw:
        return None
    moment = datetime.fromtimestamp(float(raw), UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def _cursor(batch_id: str, after: str) -> str:
    return base64.urlsafe_b64encode(f"{after}:{batch_id}".encode()).decode().rstrip("=")


def _after(batch_id: str, cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        after, owner = raw.split(":", 1)
        first, sep, second = after.partition("-")
        if owner == batch_id and first.isdigit() and (not sep or second.isdigit()):
            return after
    except (ValueError, binascii.Error):
        pass
    raise ApiError(422, "invalid_cursor", "'cursor' is not a next_cursor of this batch.")


@asynccontextmanager
async def redis_batches(
    url: str, telemetry: Telemetry, agent: Agent, concurrency: int
) -> AsyncIterator[RedisBatches]:
    """The batches on Redis for a service's life; with ``concurrency`` > 0 the service
    works the queue too (its runs as batch runs: they take only part of the run slots).
    On shutdown, running tasks get ``DRAIN_SECONDS``, then go back to the queue."""
    client = RedisClient(url, telemetry)
    try:
        if concurrency == 0:
            yield RedisBatches(client, telemetry)
            return

        async def work(task: Task) -> dict[str, Any]:
            return (await agent.arun(task.query, batch=True)).to_dict()

        consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        source = RedisTaskSource(client, QueueOptions.from_env(os.environ), consumer=consumer)
        options = BatchOptions(workers=concurrency, concurrency=concurrency)
        processor = BatchProcessor(work, telemetry, options, batch_id=consumer)
        source.on_cancel = processor.cancel
        async with source.running():
            serving = asyncio.create_task(processor.serve(source), name="redis-queue-worker")
            try:
                yield RedisBatches(client, telemetry)
            finally:
                processor.drain()
                with suppress(TimeoutError):
                    await asyncio.wait({serving}, timeout=DRAIN_SECONDS)
                processor.cancel()
                await asyncio.wait({serving}, timeout=DRAIN_SECONDS)
                serving.cancel()  # a record still waiting for Redis: its task is reclaimed
                with suppress(BaseException):
                    await serving
    finally:
        await client.close()
