"""The worker's side of the Redis queue: a ``TaskSource`` for ``BatchProcessor.serve``.

``RedisTaskSource.take`` takes the next task of any batch (redis_queue.py's ``TAKE``:
highest band first, a quiet worker's tasks before new ones), waiting with a growing
pause (to 0.5 s) while the queue is empty. Each task comes with its own sink, a
``Delivery``: its record, the ack and the entry's deletion in one script, so the result
is written once whichever worker finishes first. A cancelled task goes back to the
queue at once (the worker is stopping), or is dropped when its batch was cancelled.
Once the worker is stopping, a record waits for a Redis that is down
``STOPPING_PATIENCE`` s at most: the task stays pending, taken again by another worker.

While the source runs (``running()``), a heartbeat every third of the visibility
timeout (at most 1 s) keeps the tasks this worker holds from being reclaimed, cancels
those whose batch was cancelled, and reads the queue's depth for
``agentwatch_redis_queue_tasks``.

Every stop is bounded even when a cancellation is lost: on Python 3.11,
``asyncio.wait_for`` (which redis-py sends every command with) swallows a cancellation
that arrives as the send completes (CPython gh-86296), and the cancelled call goes on.
``ended`` cancels again until the task ends, for a bounded time; the heartbeat also
stops by itself once ``running()`` ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .jsonl_sink import MAX_LINE_BYTES
from .processor import Taken
from .redis_queue import (
    CANCELLED,
    DEAD_LETTERS_KEPT,
    GROUP,
    QueueOptions,
    RedisClient,
    RedisUnavailable,
)
from .sink import Record, RecordTooLarge
from .task import FINAL, Task

log = logging.getLogger(__name__)

ENDING_WITHIN = 5.0  # s a cancelled task of the source is waited for, at most
IDLE_PAUSE_MAX = 0.5  # s between looks at an empty queue, at most
PRUNE_EVERY = 60  # heartbeats between prunes of the names of workers gone for good
GONE_AFTER_MS = 3_600_000  # a name with nothing pending, quiet this long, is pruned
BUDGET_SPENT_REASON = "not run: the batch's budget (budget_usd) was spent"
DEAD_LETTER_REASON = (
    "dead letter: taken by a worker %d times and never finished (each worker died or "
    "stalled with it); AGENTWATCH_REDIS_MAX_DELIVERIES sets how many"
)


def _cost(value: object) -> str:
    """A record's ``cost_usd`` as the result script takes it ("": none, or not a cost)."""
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return repr(float(value))
    return ""


class Delivery:
    """Where one task's record goes: its batch's results in Redis, with the ack."""

    def __init__(
        self,
        source: RedisTaskSource,
        stream: str,
        entry_id: str,
        batch_id: str,
        raw: str,
        delivery: int = 1,
    ):
        self._source = source
        self.delivery = delivery  # the how-manieth time the entry was taken
        self.stream = stream
        self.entry_id = entry_id
        self.batch_id = batch_id
        self._raw = raw
        self.batch_cancelled = False
        self.key = f"{stream} {entry_id}"  # entry ids repeat across the band streams

    async def open(self) -> Mapping[str, Record]:
        return {}

    def check(self, record: Record) -> None:
        """The producer writes it as one line of its results file: the same limit."""
        if len(json.dumps(record, ensure_ascii=False).encode()) >= MAX_LINE_BYTES:
            raise RecordTooLarge(f"the task's record is larger than {MAX_LINE_BYTES} bytes")

    async def add(self, record: Record) -> None:
        if record["status"] in FINAL:
            mode = "final"
        else:  # cancelled: its batch was, or this worker is stopping
            mode = "drop" if self.batch_cancelled else "requeue"
        client = self._source.client
        batch = client.keys.batch
        keys = [
            batch(self.batch_id, "results"),
            batch(self.batch_id, "done"),
            self.stream,
            batch(self.batch_id, "queued"),
            batch(self.batch_id, "taken"),
            batch(self.batch_id),
            batch(self.batch_id, "paid"),
        ]
        args = [
            GROUP,
            self.entry_id,
            str(record["id"]),
            json.dumps(record),
            mode,
            self._raw,
            str(record["status"]),
            _cost(record.get("cost_usd")),
            f"{self.entry_id} {self._source.consumer} {self.delivery}",
        ]
        try:
            await client.call(
                "writing a result",
                lambda: client.complete(keys=keys, args=args),
                stopping=self._source.stopping,
            )
        except RedisUnavailable as exc:  # stopping: the task stays pending, taken again
            log.warning(
                "%s; task %s of batch %s is left to another worker (after the visibility timeout)",
                exc,
                record["id"],
                self.batch_id,
            )
        finally:
            self._source.release(self.key)

    async def close(self) -> None:
        """Nothing to release."""


class RedisTaskSource:
    """Tasks of any batch from the Redis queue, for ``BatchProcessor.serve``."""

    def __init__(
        self,
        client: RedisClient,
        options: QueueOptions,
        *,
        consumer: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.options = options
        self.consumer = consumer
        self.clock = clock
        self.on_cancel: Callable[[str], None] = lambda key: None  # processor.cancel
        # "stream entry-id" (ids repeat across the band streams) -> the task held
        self._held: dict[str, Delivery] = {}
        self._stopped = asyncio.Event()
        self._leaving = False  # running() ends: the heartbeat stops by itself
        self._lock = asyncio.Lock()  # one take at a time: the takers share the pauses
        self.dropped = 0  # tasks of cancelled or spent batches the last look ended
        self._propagator = TraceContextTextMapPropagator()

    @property
    def stopping(self) -> asyncio.Event:
        """Set by ``stop()``: a result written from then on waits for Redis a bounded time."""
        return self._stopped

    def stop(self) -> None:
        self._stopped.set()

    def release(self, key: str) -> None:
        self._held.pop(key, None)

    async def take(self) -> Taken | None:
        pause = 0.01
        while not self._stopped.is_set():  # bounded by stop(), or the caller's cancellation
            async with self._lock:
                if self._stopped.is_set():
                    break
                taken = await self._unless_stopped(self.take_nowait())
            if taken is not None:
                return taken
            if self.dropped:  # tasks of a cancelled or spent batch ended: look again now
                pause = 0.01
                continue
            with suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._stopped.wait()
            pause = min(pause * 2, IDLE_PAUSE_MAX)
        return None

    async def _unless_stopped(self, look: Coroutine[Any, Any, Taken | None]) -> Taken | None:
        """``look``, given up when ``stop()`` comes first (Redis may be down for long:
        a stopping worker does not wait for it). A task taken by a look given up stays
        pending in Redis, and is taken again after the visibility timeout."""
        looking = asyncio.ensure_future(look)
        stopping = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait((looking, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (stopping, looking):
                waiter.cancel()  # both, though this task's own wait below is cancelled
            for waiter in (stopping, looking):
                await ended(waiter)
        if not looking.done() or looking.cancelled():
            return None
        return looking.result()  # a look that ended as it was given up: its task

    async def take_nowait(self) -> Taken | None:
        """One look at the queue: the next task, or None when there is none now."""
        client = self.client
        keys = [*client.keys.streams, client.keys.dead]
        args = [
            GROUP,
            self.consumer,
            str(int(self.options.visibility_timeout * 1000)),
            str(self.options.max_deliveries),
            client.keys.prefix,
            DEAD_LETTER_REASON,
            str(DEAD_LETTERS_KEPT),
            BUDGET_SPENT_REASON,
        ]
        answer = await client.call("taking a task", lambda: client.take(keys=keys, args=args))
        stream, entry_id, raw, deliveries, reclaims, dead, drops = answer
        self.dropped = int(drops)
        if reclaims:
            client.telemetry.queue.reclaimed(int(reclaims))
        if dead:
            client.telemetry.queue.dead_lettered(int(dead))
        if not stream:
            return None
        return self._taken(str(stream), str(entry_id), str(raw), int(deliveries))

    def _taken(self, stream: str, entry_id: str, raw: str, deliveries: int = 1) -> Taken:
        entry: dict[str, Any] = json.loads(raw)
        task = Task(str(entry["id"]), str(entry["query"]), int(entry["priority"]))
        delivery = Delivery(self, stream, entry_id, str(entry["b"]), raw, deliveries)
        self._held[delivery.key] = delivery
        waited = max(0.0, time.time() - float(entry.get("at") or time.time()))
        traceparent = entry.get("traceparent")
        parent: Context | None = None
        if isinstance(traceparent, str):
            parent = self._propagator.extract({"traceparent": traceparent})
        timeout = entry.get("timeout")
        return Taken(
            task,
            key=delivery.key,
            batch_id=delivery.batch_id,
            enqueued_at=self.clock() - waited,
            sink=delivery,
            parent=parent,
            timeout=float(timeout) if timeout is not None else None,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RedisTaskSource]:
        """The heartbeat while the body runs (``BatchProcessor.serve``)."""
        self._leaving = False
        beat = asyncio.create_task(self._heartbeat(), name="redis-heartbeat")
        try:
            yield self
        finally:
            self._leaving = True
            await ended(beat)
            await self._leave()

    async def _leave(self) -> None:
        """This worker's name off the group where it holds nothing (best effort: a
        name left behind costs Redis a few bytes)."""
        client = self.client
        with suppress(Exception):
            async with asyncio.timeout(2):
                await client.leave(keys=client.keys.streams, args=[GROUP, self.consumer])

    async def _heartbeat(self) -> None:
        interval = min(self.options.visibility_timeout / 3, 1.0)
        beats = 0
        while not self._leaving:  # until running() ends, even if its cancel is lost
            await asyncio.sleep(interval)
            beats += 1
            try:
                await self.beat()
                if beats % PRUNE_EVERY == 0:
                    await self.prune()
            except Exception:  # Redis down is retried inside; anything else must not stop it
                log.exception("the Redis queue's heartbeat failed; trying again")

    async def beat(self) -> None:
        """Keep the held tasks, cancel those of cancelled batches, read the depth."""
        held = list(self._held.values())
        client = self.client
        by_stream: dict[str, list[str]] = {}
        for delivery in held:
            by_stream.setdefault(delivery.stream, []).append(delivery.entry_id)
        for stream, ids in by_stream.items():
            await client.call(
                "keeping tasks", partial(client.heartbeat, [stream], [GROUP, self.consumer, *ids])
            )
        batches = sorted({d.batch_id for d in held})
        if batches:
            states = await client.call("reading batch states", lambda: self._states(batches))
            cancelled = {b for b, state in zip(batches, states, strict=True) if state == CANCELLED}
            for delivery in held:
                if delivery.batch_id in cancelled and not delivery.batch_cancelled:
                    delivery.batch_cancelled = True
                    self.on_cancel(delivery.key)
        waiting, pending = await client.call(
            "reading the queue depth", lambda: client.depth(keys=client.keys.streams, args=[GROUP])
        )
        client.telemetry.queue.depth(int(waiting), int(pending))

    async def prune(self, gone_after_ms: int = GONE_AFTER_MS) -> int:
        """Take the names of workers gone for good off the group (a killed worker's
        name stays behind it); how many went."""
        client = self.client
        args = [GROUP, str(gone_after_ms), self.consumer]
        removed = await client.call(
            "pruning gone workers", lambda: client.prune(keys=client.keys.streams, args=args)
        )
        return int(removed)

    async def _states(self, batches: list[str]) -> list[Any]:
        async with self.client.redis.pipeline(transaction=False) as pipe:
            for batch_id in batches:
                pipe.hget(self.client.keys.batch(batch_id), "state")
            return await pipe.execute()


async def ended(task: asyncio.Future[Any], within: float = ENDING_WITHIN) -> None:
    """Cancel ``task`` and wait for it to end, cancelling again while it goes on (a
    cancellation swallowed by Python 3.11's ``asyncio.wait_for``, gh-86296), for at most
    ``within`` seconds: past that it is left behind, logged. Its result or exception is
    the caller's to read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not task.done():  # bounded by the deadline
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("%r did not end within %g s of its cancellation; left behind", task, within)
            return
        task.cancel()
        await asyncio.wait((task,), timeout=min(remaining, 0.1))
    if not task.cancelled():
        task.exception()  # read: a failed look or beat is the caller's, or logged by it
