"""The Redis queue's rules, in-process on a private redis-server: priorities, reclaims
after the visibility timeout, dead letters, one result per task when two workers finish
it, cancelled batches, per-task timeouts, traces continued across the queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.runtime.batch import BatchOptions, BatchProcessor, Task, TaskStatus
from agentwatch.runtime.batch.redis_queue import (
    CANCELLED,
    QueueOptions,
    RedisBatch,
    RedisClient,
)
from agentwatch.runtime.batch.redis_worker import RedisTaskSource
from agentwatch.telemetry import Telemetry
from agentwatch.telemetry.names import SPAN_BATCH, SPAN_BATCH_TASK
from tests.redis_helpers import RedisServer

pytestmark = pytest.mark.integration

COMPLETED = TaskStatus.COMPLETED
QUICK = QueueOptions(visibility_timeout=0.2, max_deliveries=2)


@asynccontextmanager
async def client_for(server: RedisServer, telemetry: Telemetry) -> AsyncIterator[RedisClient]:
    client = RedisClient(server.url, telemetry)
    try:
        yield client
    finally:
        await client.close()


def source(client: RedisClient, name: str, options: QueueOptions = QUICK) -> RedisTaskSource:
    return RedisTaskSource(client, options, consumer=name)


async def results(batch: RedisBatch, want: int, seconds: float = 20) -> list[tuple[str, Any]]:
    got: list[tuple[str, Any]] = []
    async with asyncio.timeout(seconds):
        while len(got) < want:  # bounded by the timeout
            got += await batch.follow(block_ms=100)
    return got


async def take(src: RedisTaskSource, seconds: float = 10) -> Any:
    async with asyncio.timeout(seconds):
        return await src.take()


async def test_higher_priority_bands_are_taken_first(
    redis_server: RedisServer, telemetry: Telemetry
) -> None:
    async with client_for(redis_server, telemetry) as client:
        batch = RedisBatch(client, "prio")
        await batch.start()
        tasks = [
            Task("low", "q", 7),
            Task("top", "q", 0),
            Task("mid", "q", 3),
            Task("neg", "q", -4),
        ]
        assert await batch.enqueue(tasks, None, None) == 4
        assert await batch.enqueue(tasks, None, None) == 0  # idempotent: nothing twice
        worker = source(client, "w")
        order = [(await take(worker)).task.id for _ in tasks]
    assert order == ["top", "neg", "mid", "low"]  # -4 is band 0; first in, first out


async def test_a_quiet_workers_task_is_taken_again_and_written_once(
    redis_server: RedisServer, telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    """Worker a takes the task and goes quiet (no heartbeat): b takes it again after the
    visibility timeout; both finish it, the first record is the one kept."""
    async with client_for(redis_server, telemetry) as client:
        batch = RedisBatch(client, "twice")
        await batch.start()
        await batch.enqueue([Task("t", "q")], None, None)
        a, b = source(client, "a"), source(client, "b")
        first = await take(a)
        assert await b.take_nowait() is None  # still a's: not quiet long enough
        await asyncio.sleep(0.3)  # past the visibility timeout
        second = await take(b)
        assert (first.task.id, second.task.id) == ("t", "t")
        assert registry.get_sample_value("agentwatch_redis_queue_reclaims_total") == 1
        await second.sink.add(Task("t", "q", result="from b", status=COMPLETED).record())
        await first.sink.add(Task("t", "q", result="from a", status=COMPLETED).record())
        got = await results(batch, 1)
        await asyncio.sleep(0.2)
        assert await batch.follow(block_ms=50) == []  # no second record
    assert [(i, r["result"]) for i, r in got] == [("t", "from b")]


async def test_a_task_taken_too_often_becomes_a_dead_letter(
    redis_server: RedisServer, telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    async with client_for(redis_server, telemetry) as client:
        batch = RedisBatch(client, "poison")
        await batch.start()
        await batch.enqueue([Task("p", "kills workers", 2)], None, None)
        for name in ("a", "b"):  # two deliveries, each worker "dies" holding it
            assert (await take(source(client, name))).task.id == "p"
            await asyncio.sleep(0.3)
        assert await source(client, "c").take_nowait() is None  # third: dead letter instead
        ((task_id, record),) = await results(batch, 1)
        dead = await client.redis.xrange(client.keys.dead)
    assert task_id == "p"
    assert record["status"] == "failed"
    assert record["priority"] == 2
    assert "dead letter: taken by a worker 2 times" in record["error"]
    assert [fields["task"] for _, fields in dead] == ["p"]
    assert registry.get_sample_value("agentwatch_redis_queue_dead_letters_total") == 1


async def test_processor_serves_the_queue_with_timeouts_and_the_batch_trace(
    redis_server: RedisServer, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """The processor's workers run queued tasks as a local batch does: each task's span
    is a child of the producer's batch span (traceparent in the message); the producer's
    timeout applies."""
    async with client_for(redis_server, telemetry) as client:
        batch = RedisBatch(client, "served")
        await batch.start()
        with telemetry.start_operation(SPAN_BATCH, {}) as span:
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )

            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier, context=span.context)
            tasks = [Task("fast", "q"), Task("slow", "sleep")]
            await batch.enqueue(tasks, 0.3, carrier["traceparent"])
        src = source(client, "w", QueueOptions(visibility_timeout=5))
        processor = BatchProcessor(_work, telemetry, BatchOptions(workers=2))
        src.on_cancel = processor.cancel
        async with src.running():
            serving = asyncio.create_task(processor.serve(src))
            got = dict(await results(batch, 2))
            processor.drain()
            summary = await asyncio.wait_for(serving, 10)
    assert got["fast"]["status"] == "completed"
    assert got["slow"]["status"] == "timed_out"
    assert summary.counts == {"completed": 1, "timed_out": 1}
    spans = exporter.get_finished_spans()
    (parent,) = [s for s in spans if s.name == SPAN_BATCH]
    children = [s for s in spans if s.name == SPAN_BATCH_TASK]
    assert len(children) == 2
    assert {c.context.trace_id for c in children} == {parent.context.trace_id}
    assert {c.parent.span_id for c in children if c.parent} == {parent.context.span_id}
    assert {c.attributes["agentwatch.batch.id"] for c in children} == {"served"}


async def _work(task: Task) -> str:
    if task.query == "sleep":
        await asyncio.sleep(30)
    return f"done {task.id}"


async def test_a_cancelled_batch_drops_its_queued_and_running_tasks(
    redis_server: RedisServer, telemetry: Telemetry
) -> None:
    started = asyncio.Event()

    async def hang(task: Task) -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    async with client_for(redis_server, telemetry) as client:
        batch = RedisBatch(client, "stop")
        await batch.start()
        await batch.enqueue([Task("running", "q", 0), Task("queued", "q", 9)], None, None)
        src = source(client, "w", QueueOptions(visibility_timeout=0.6))
        processor = BatchProcessor(hang, telemetry, BatchOptions(workers=1))
        src.on_cancel = processor.cancel
        async with src.running():
            serving = asyncio.create_task(processor.serve(src))
            async with asyncio.timeout(10):
                await started.wait()
            await batch.set_state(CANCELLED)
            got = dict(await results(batch, 2))  # both dropped: no record
            processor.drain()
            await asyncio.wait_for(serving, 10)
        assert await batch.running() == 0
        queued = await client.redis.hgetall(client.keys.batch("stop", "queued"))
    assert got == {"running": None, "queued": None}
    assert queued == {}  # a rerun enqueues both again


async def test_enqueue_waits_for_redis_and_carries_on(
    redis_server: RedisServer, telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    """Redis down: the call is retried with backoff (counted) until Redis is back."""
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            await asyncio.to_thread(redis_server.start)
        await asyncio.sleep(0)

    await asyncio.to_thread(redis_server.stop)
    client = RedisClient(redis_server.url, telemetry, sleep=sleep)
    try:
        batch = RedisBatch(client, "outage")
        await asyncio.wait_for(batch.start(), 30)
        assert await batch.enqueue([Task("t", "q")], None, None) == 1
    finally:
        await client.close()
    assert len(sleeps) >= 3
    assert registry.get_sample_value("agentwatch_redis_retries_total") == len(sleeps)


async def test_a_stopping_worker_does_not_wait_for_redis(
    redis_server: RedisServer, telemetry: Telemetry
) -> None:
    """Redis down: a take keeps retrying, but stop() ends it at once (no task)."""
    async with client_for(redis_server, telemetry) as client:
        await asyncio.to_thread(redis_server.stop)
        worker = source(client, "w")
        taking = asyncio.create_task(worker.take())
        await asyncio.sleep(0.3)  # retrying by now
        assert not taking.done()
        worker.stop()
        assert await asyncio.wait_for(taking, 5) is None


async def test_a_worker_leaving_takes_its_name_off_the_group(
    redis_server: RedisServer, telemetry: Telemetry
) -> None:
    async with client_for(redis_server, telemetry) as client:
        holder, done = await holder_and_done(client, "leave")
        async with holder.running(), done.running():
            pass
        names = await consumer_names(client)
    assert names == {"holder"}  # it holds a task: kept, for the task to be reclaimed


async def holder_and_done(
    client: RedisClient, batch_id: str
) -> tuple[RedisTaskSource, RedisTaskSource]:
    """Two workers: one holding a task, one that finished its task (holds nothing)."""
    batch = RedisBatch(client, batch_id)
    await batch.start()
    await batch.enqueue([Task("a", "q"), Task("b", "q")], None, None)
    holder, done = source(client, "holder"), source(client, "done")
    assert (await take(holder)).task.id == "a"
    finished = await take(done)
    await finished.sink.add(Task("b", "q", result=1, status=COMPLETED).record())
    assert await consumer_names(client) == {"holder", "done"}
    return holder, done


async def consumer_names(client: RedisClient) -> set[str]:
    stream = client.keys.streams[5]
    return {str(c["name"]) for c in await client.redis.xinfo_consumers(stream, "workers")}


async def test_names_of_workers_gone_for_good_are_pruned(
    redis_server: RedisServer, telemetry: Telemetry
) -> None:
    async with client_for(redis_server, telemetry) as client:
        await holder_and_done(client, "prune")
        await asyncio.sleep(0.05)
        assert await source(client, "me").prune(gone_after_ms=10) == 1
        names = await consumer_names(client)
    assert names == {"holder"}  # "done" went; one holding a task stays


def priced(task_id: str, status: TaskStatus, cost: float | None) -> dict[str, Any]:
    task = Task(task_id, "q", status=status)
    task.cost_usd = cost
    return task.record()


async def test_every_attempts_cost_counts_once_toward_the_budget(
    redis_server: RedisServer, telemetry: Telemetry
) -> None:
    """Money spent is spent: an attempt cancelled (its worker stopping) and the one that
    finished both count, and the same write sent again (a reply lost) does not; the
    budget reached, the batch is spent and its next task ends cancelled untaken."""
    async with client_for(redis_server, telemetry) as client:
        batch = RedisBatch(client, "paid")
        await batch.start(budget_usd=1.0)
        await batch.enqueue([Task("t", "q")], None, None)
        a, b = source(client, "a"), source(client, "b")
        first = await take(a)
        await first.sink.add(priced("t", TaskStatus.CANCELLED, 0.6))  # back to the queue
        again = await take(b)
        assert again.task.id == "t"
        record = priced("t", COMPLETED, 0.6)
        await again.sink.add(record)
        await again.sink.add(record)  # a retried call: not counted twice
        meta, _ = await batch.summary() or ({}, {})
        assert float(meta["spent_usd"]) == pytest.approx(1.2)
        assert meta["state"] == "spent"
        await batch.enqueue([Task("u", "q")], None, None)
        assert await b.take_nowait() is None  # ended, not handed out
        got = dict(await results(batch, 2))
    assert got["t"]["status"] == "completed"
    assert got["u"]["status"] == "cancelled"
    assert "budget" in got["u"]["error"]


async def test_a_cost_written_for_a_batch_redis_lost_does_not_bring_it_back(
    redis_server: RedisServer, telemetry: Telemetry
) -> None:
    async with client_for(redis_server, telemetry) as client:
        batch = RedisBatch(client, "lost")
        await batch.start()
        await batch.enqueue([Task("t", "q")], None, None)
        taken = await take(source(client, "a"))
        await client.redis.delete(client.keys.batch("lost"))  # expired, or Redis lost it
        await taken.sink.add(priced("t", COMPLETED, 0.5))
        assert await batch.summary() is None


async def test_a_worker_looks_again_at_once_past_tasks_it_dropped(
    redis_server: RedisServer, telemetry: Telemetry
) -> None:
    """100 tasks of a cancelled batch ahead of another batch's: each look ends 16 of
    them, and the next look follows at once (it paused up to 0.5 s between looks: a
    50,000-task batch cancelled or spent held its band's other batches for minutes)."""
    async with client_for(redis_server, telemetry) as client:
        gone, kept = RedisBatch(client, "gone"), RedisBatch(client, "kept")
        await gone.start()
        await gone.enqueue([Task(f"g{i}", "q") for i in range(100)], None, None)
        await kept.start()
        await kept.enqueue([Task("k", "q")], None, None)
        await gone.set_state(CANCELLED)
        src = source(client, "w")
        looks, stop_waits = 0, 0
        look, wait = src.take_nowait, src._stopped.wait

        async def counted_look() -> Any:
            nonlocal looks
            looks += 1
            return await look()

        async def counted_wait() -> bool:
            nonlocal stop_waits
            stop_waits += 1
            return await wait()

        src.take_nowait = counted_look  # type: ignore[method-assign]
        src._stopped.wait = counted_wait  # type: ignore[method-assign]
        taken = await take(src)
    assert taken.task.id == "k"
    assert looks == 7  # 100 dropped, 16 a look, then the task
    assert stop_waits == looks  # each look's own; no pause between them


async def test_a_worker_never_starts_a_task_it_still_runs_twice(
    redis_server: RedisServer, telemetry: Telemetry
) -> None:
    """Its heartbeat late past the visibility timeout, a worker's own look finds its own
    running task quiet: the claim renews it, and it is not handed out a second time."""
    async with client_for(redis_server, telemetry) as client:
        batch = RedisBatch(client, "mine")
        await batch.start()
        await batch.enqueue([Task("t", "q")], None, None)
        a = source(client, "a")
        first = await take(a)
        await asyncio.sleep(0.3)  # past the visibility timeout, no heartbeat
        assert await a.take_nowait() is None
        assert await source(client, "b").take_nowait() is None  # renewed: still a's
        await first.sink.add(Task("t", "q", result="once", status=COMPLETED).record())
        got = await results(batch, 1)
    assert [(i, r["result"]) for i, r in got] == [("t", "once")]
