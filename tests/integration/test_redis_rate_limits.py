"""The rate limiter's buckets on Redis: processes that share a Redis share one budget
per model (issue 19's shared limits), by the same rules as one process's buckets."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agentwatch.runtime.agents.agent_runtime import AgentRuntime
from agentwatch.runtime.batch.redis_buckets import RedisBuckets
from agentwatch.runtime.batch.redis_queue import RedisClient
from agentwatch.runtime.rate_limiter import REQUESTS, InProcessBuckets, Learned, RateLimiter
from agentwatch.runtime.rate_limits import PerModel, RateLimits
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry
from tests.redis_helpers import RedisServer

RPM_600 = RateLimits(rpm=PerModel.parse("600"))  # 10 a second, 10 at once


class Waits:
    """The limiter's sleep, recorded instead of slept: the waits it was told to take."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


@asynccontextmanager
async def limiter(
    server: RedisServer, telemetry: Telemetry, waits: Waits
) -> AsyncIterator[RateLimiter]:
    """One process's limiter on the shared Redis (a connection pool of its own)."""
    client = RedisClient(server.url, telemetry)
    try:
        yield RateLimiter(RPM_600, telemetry, store=RedisBuckets(client), sleep=waits)
    finally:
        await client.close()


async def test_two_processes_spend_one_budget(
    redis_server: RedisServer, telemetry: Telemetry
) -> None:
    """30 requests, 15 from each of two limiters on one Redis: the 30th waits for the
    20 after the first 10 at 10 a second (~2 s); with a budget each, it would wait
    for 5 (~0.5 s)."""
    waits = Waits()
    async with (
        limiter(redis_server, telemetry, waits) as a,
        limiter(redis_server, telemetry, waits) as b,
    ):
        for _ in range(15):
            await a.acquire("gpt-4o", 100)
            await b.acquire("gpt-4o", 100)
    alone = Waits()
    separate = [
        RateLimiter(RPM_600, telemetry, store=InProcessBuckets(), sleep=alone) for _ in "ab"
    ]
    for _ in range(15):
        for one in separate:
            await one.acquire("gpt-4o", 100)

    assert len(waits.asked) == 20  # the first 10 (the burst) wait for nothing
    assert max(waits.asked) > 1.8
    assert max(alone.asked) < 0.6


async def test_what_one_process_learns_holds_the_others_back(
    redis_server: RedisServer, telemetry: Telemetry
) -> None:
    """A Retry-After seen by one process: the other's next request waits for it too."""
    waits = Waits()
    async with (
        limiter(redis_server, telemetry, waits) as a,
        limiter(redis_server, telemetry, waits) as b,
    ):
        key = f"gpt-4o\n{REQUESTS}"
        assert await a.store.learn(key, Learned(retry_after=30.0), 10.0, 0.0) == 10.0
        await b.acquire("gpt-4o", 100)
        lower = Learned(limit_per_minute=300)  # the provider's: 5 a second, below 10
        assert await b.store.learn(key, lower, 10.0, 0.0) == 5.0  # the rate it runs at now
    assert len(waits.asked) == 1
    assert 25.0 < waits.asked[0] <= 30.0


async def test_a_runtime_with_redis_and_limits_shares_its_budget(
    redis_server: RedisServer, telemetry: Telemetry
) -> None:
    settings = dataclasses.replace(
        RuntimeSettings.from_env(overrides={}), redis_url=redis_server.url, rate_limits=RPM_600
    )
    async with AgentRuntime(settings, telemetry) as runtime:
        limiter = runtime.agent.model.client_limiter
        assert isinstance(limiter.store, RedisBuckets)
        assert (await runtime.agent.arun("what is 2 + 3")).output
