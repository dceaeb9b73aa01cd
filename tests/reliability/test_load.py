"""Many concurrent SSE streams against the service, held to the end.

AGENTWATCH_LOAD_STREAMS streams at once (200 in `make test`, 1,000 in `make soak`): all
complete, memory stays bounded, and the event loop's lag — measured by the service and
exported as agentwatch_event_loop_lag_seconds — stays under 100 ms at p99.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from agentwatch.runtime.events import read_sse
from agentwatch.runtime.model import ModelBehavior
from agentwatch.runtime.runtime import AgentRuntime
from agentwatch.runtime.server import create_app
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry

STREAMS = int(os.environ.get("AGENTWATCH_LOAD_STREAMS", "200"))


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def histogram_quantile(registry: CollectorRegistry, name: str, q: float) -> float:
    buckets = sorted(
        (float(s.labels["le"]), s.value)
        for m in registry.collect()
        for s in m.samples
        if s.name == f"{name}_bucket"
    )
    total = buckets[-1][1]
    for le, count in buckets:
        if count >= q * total:
            return le
    return float("inf")


async def test_concurrent_streams_complete_with_low_loop_lag(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    behavior = ModelBehavior(time_to_first_token=0.05, tokens_per_second=100)
    runtime = AgentRuntime(RuntimeSettings(), telemetry, model_behavior=behavior)
    await runtime.start()
    runner = web.AppRunner(
        create_app(RuntimeSettings(), telemetry, runtime=runtime), handler_cancellation=True
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/runs"
    before = rss_kib()
    try:
        connector = aiohttp.TCPConnector(limit=STREAMS)
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def stream(i: int) -> int:
                body = {"input": "hello" if i % 2 else f"what is {i} + 1", "stream": True}
                texts = 0
                async with session.post(url, json=body) as response:
                    assert response.status == 200
                    async for event, _ in read_sse(aiter(response.content)):
                        texts += event == "text"
                        last = event
                assert last == "result"
                return texts

            counts = await asyncio.gather(*(stream(i) for i in range(STREAMS)))
        assert len(counts) == STREAMS
        assert min(counts) > 1
    finally:
        await runner.cleanup()
        await runtime.stop()
    growth_mib = (rss_kib() - before) / 1024
    assert growth_mib < 400, f"RSS grew by {growth_mib:.0f} MiB for {STREAMS} streams"
    p99 = histogram_quantile(registry, "agentwatch_event_loop_lag_seconds", 0.99)
    assert p99 <= 0.1, f"event loop lag p99 bucket {p99} s"
