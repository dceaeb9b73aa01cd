"""A worker told to stop stops, whatever it was doing and whatever state Redis is in.

On Python 3.11 a cancellation can be lost: ``asyncio.wait_for``, which redis-py sends
every command with, swallows one that arrives as the send completes (CPython gh-86296).
A heartbeat cancelled that way went on beating for ever, and its worker never exited
after SIGTERM (issue 19: seen in CI at the end of a batch)."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from agentwatch.runtime.batch import Task
from agentwatch.runtime.batch.redis_queue import Keys, QueueOptions, RedisBatch, RedisClient
from agentwatch.runtime.batch.redis_worker import RedisTaskSource
from agentwatch.telemetry import Telemetry
from tests.helpers import cli_env, time_bound
from tests.redis_helpers import AGENTWATCH, RedisServer, Worker, workers, write_tasks

pytestmark = pytest.mark.integration


class LosesCancellations:
    """A client whose every call ends normally although cancelled meanwhile, as a
    redis-py command does when its cancellation reaches ``wait_for`` late."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.keys = Keys()
        self.calling = asyncio.Event()
        self.loses = True

    async def call(self, what: str, op: Callable[[], Any]) -> Any:
        self.calling.set()
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            if not self.loses:
                raise
            # lost, as Python 3.11's wait_for loses it when the send completes
        return 0, 0  # the queue's depth: nothing waiting, nothing pending

    async def leave(self, **_: Any) -> int:
        return 0


async def ends_within(body: Coroutine[Any, Any, None], seconds: float) -> bool:
    """Whether ``body`` ends within ``seconds``; when it does not, it and the heartbeat it
    hangs on are cancelled until they end (bounded), for the test to fail, not hang."""
    running = asyncio.create_task(body)
    done, _ = await asyncio.wait((running,), timeout=seconds)
    for _ in range(100):  # bounded: a hung one is cancelled until it ends
        left = [t for t in asyncio.all_tasks() if t.get_name() == "redis-heartbeat"]
        if running.done() and not left:
            break
        for task in (running, *left):
            task.cancel()
        await asyncio.sleep(0.1)
    return bool(done)


async def test_the_heartbeat_ends_though_its_cancellation_is_lost(telemetry: Telemetry) -> None:
    client = LosesCancellations(telemetry)
    source = RedisTaskSource(
        client,  # type: ignore[arg-type]
        QueueOptions(visibility_timeout=0.03),
        consumer="w",
    )

    async def run_and_leave() -> None:
        async with source.running():
            await client.calling.wait()  # a beat under way

    try:
        assert await ends_within(run_and_leave(), time_bound(5, 30)), "running() never ended"
    finally:
        client.loses = False


async def test_a_source_stops_at_any_moment_of_its_heartbeat(
    redis_server: RedisServer, telemetry: Telemetry
) -> None:
    """A heartbeat beating all the time (every ms), left at random moments: each time
    running() ends (on the old code one of the first few lost its cancellation)."""
    client = RedisClient(redis_server.url, telemetry)
    try:
        await client.call("starting", client.ensure_groups)
        rng = random.Random(19)
        for i in range(60):  # bounded
            source = RedisTaskSource(client, QueueOptions(visibility_timeout=0.003), consumer="w")

            async def run_and_leave(source: RedisTaskSource = source) -> None:
                async with source.running():
                    await asyncio.sleep(rng.uniform(0.001, 0.02))

            assert await ends_within(run_and_leave(), time_bound(5, 30)), f"hung at {i}"
    finally:
        await client.close()


async def test_a_stopping_worker_does_not_wait_for_redis_to_write_a_result(
    redis_server: RedisServer, telemetry: Telemetry
) -> None:
    """Redis down when a task ends on a stopping worker: the write is given up after the
    patience (the task stays pending, for another worker), the worker goes on stopping."""
    client = RedisClient(redis_server.url, telemetry, stopping_patience=0.3)
    try:
        batch = RedisBatch(client, "down")
        await batch.start()
        await batch.enqueue([Task("t", "q")], None, None)
        source = RedisTaskSource(client, QueueOptions(), consumer="w")
        async with asyncio.timeout(30):
            taken = await source.take()
        assert taken is not None
        await asyncio.to_thread(redis_server.stop)
        source.stop()
        record = Task("t", "q").record() | {"status": "completed"}
        writing = asyncio.create_task(taken.sink.add(record))
        done, _ = await asyncio.wait((writing,), timeout=time_bound(5, 30))
        writing.cancel()
        assert done, "the write waited for Redis although the worker is stopping"
        writing.result()  # given up, not raised
    finally:
        await client.close()


def stopped_within(worker: Worker, seconds: float) -> int:
    """SIGTERM, then the exit code; fails when it is still running after ``seconds``."""
    worker.process.send_signal(signal.SIGTERM)
    try:
        return worker.process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        worker.output.seek(0)
        said = worker.output.read().decode(errors="replace")[-4000:]
        raise AssertionError(f"the worker still runs {seconds} s after SIGTERM:\n{said}") from None


def test_a_worker_stops_on_sigterm_ready_idle_or_with_redis_down(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """SIGTERM right after the ready line, after a batch (idle, taking), and with Redis
    down: each worker exits 0 within the bound."""
    bound = time_bound(15, 60)
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    write_tasks(tasks, 20)
    with workers(redis_server.url, 3) as pool:
        for worker in pool:
            worker.wait_ready()
        assert stopped_within(pool[0], bound) == 0
        subprocess.run(
            [*AGENTWATCH, "batch", str(tasks), "--out", str(out), "--redis", redis_server.url],
            env=cli_env(OTEL_TRACES_EXPORTER="none"),
            capture_output=True,
            timeout=240,
            check=True,
        )
        assert stopped_within(pool[1], bound) == 0
        redis_server.stop()
        time.sleep(1)  # the last worker finds Redis down, retrying
        assert stopped_within(pool[2], bound) == 0
