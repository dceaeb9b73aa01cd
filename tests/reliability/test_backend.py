"""A trace backend that is down or slow costs telemetry, never requests."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from agentwatch.runtime.agents.agent import Agent
from agentwatch.runtime.builtin_model.in_process import BuiltinChatModel
from agentwatch.runtime.langchain.chat_model import InstrumentedChatModel
from agentwatch.runtime.tools import BUNDLED_CORPUS, SearchIndex, builtin_tools
from agentwatch.telemetry import Telemetry, TelemetrySettings, build_telemetry
from tests.helpers import time_bound

from ..integration.conftest import closed_port  # noqa: F401  (fixture)

RUNS = 400


class Model(InstrumentedChatModel, BuiltinChatModel):
    pass


@pytest.fixture
async def slow_receiver() -> AsyncIterator[str]:
    async def traces(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(5)  # the backend under test: it answers after 5 s
        return web.Response(status=200)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def p95_of_runs(telemetry: Telemetry) -> float:
    index = await asyncio.to_thread(SearchIndex.from_folder, BUNDLED_CORPUS)
    model = Model(telemetry=telemetry, provider_name="agentwatch")
    agent = Agent(model, builtin_tools(index), telemetry=telemetry, model_name="agentwatch-builtin")
    times = []
    for i in range(RUNS):
        start = time.perf_counter()
        await agent.arun(f"what is {i} + 1")
        times.append(time.perf_counter() - start)
    return statistics.quantiles(times, n=20)[-1]


def dropped(registry: CollectorRegistry) -> float:
    return sum(
        registry.get_sample_value("agentwatch_telemetry_spans_dropped_total", {"reason": r}) or 0.0
        for r in ("queue_full", "export_failed", "shutdown")
    )


@pytest.mark.parametrize("backend", ["down", "slow"])
async def test_runs_do_not_wait_for_the_backend_and_losses_are_counted(
    backend: str,
    closed_port: int,  # noqa: F811
    slow_receiver: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port}" if backend == "down" else slow_receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "10")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "256")
    off_registry, on_registry = CollectorRegistry(), CollectorRegistry()
    tracing_off = await asyncio.to_thread(
        build_telemetry, TelemetrySettings(sdk_disabled=True), registry=off_registry
    )
    tracing_on = await asyncio.to_thread(
        build_telemetry, TelemetrySettings.from_env(), registry=on_registry
    )
    baseline = await p95_of_runs(tracing_off)
    with_backend = await p95_of_runs(tracing_on)
    # the same runs, one after the other: the strict ratio in `make soak`, a sanity bound
    # (nothing blocks on the backend) in `make test`
    ratio, slack = time_bound(strict=1.5, generous=4.0), time_bound(strict=0.002, generous=0.05)
    assert with_backend < baseline * ratio + slack, (baseline, with_backend)

    start = time.perf_counter()
    await asyncio.to_thread(tracing_on.shutdown, 2.0)
    # the timeout, plus the exporter's own exit
    assert time.perf_counter() - start < time_bound(strict=4.0, generous=15.0)
    lost = dropped(on_registry)
    print(f"FIGURE backend {backend}: p95 of {RUNS} runs {with_backend * 1000:.2f} ms vs "
          f"{baseline * 1000:.2f} ms with tracing off; {lost:.0f} spans counted dropped; "
          f"shutdown in {time.perf_counter() - start:.2f} s")  # fmt: skip
    spans = RUNS * 4  # invoke_agent, chat, execute_tool, chat
    if backend == "down":
        assert lost == spans  # final when shutdown returns: every span is accounted for
    else:  # what the slow backend took in time was exported, the rest counted
        assert spans - 256 - 512 <= lost <= spans
