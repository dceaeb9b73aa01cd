"""Scale: concurrency, /metrics scrapes, memory.

- Concurrency: 1, 10, 100, 1,000 concurrent agent runs against the builtin model over
  loopback HTTP with 50 ms latency per answer: throughput and p95 run latency.
- /metrics with 20 tools x 5 models x error types: render time and size of both
  formats, and how long a scrape stalls the event loop (rendering runs in a thread).
- Memory: RSS after 1,000 and after 10,000 runs with the trace backend down (OTLP to a
  closed port), in its own process.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

from agentwatch.runtime.agents.agent import Agent
from agentwatch.runtime.agents.agent_runtime import AgentRuntime
from agentwatch.runtime.builtin_model import ModelBehavior
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry, create_metrics_app

from .common import DiscardingExporter

LEVELS = (1, 10, 100, 1000)
LATENCY = 0.05


def _telemetry() -> tuple[Telemetry, TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingExporter(), max_queue_size=8192))
    return Telemetry(tracer_provider=provider, registry=CollectorRegistry()), provider


async def _at_concurrency(agent: Agent, level: int, total: int) -> list[float]:
    latencies: list[float] = []
    semaphore = asyncio.Semaphore(level)

    async def one(i: int) -> None:
        async with semaphore:
            start = time.perf_counter()
            await agent.arun(f"what is {i} + 1")
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(one(i) for i in range(total)))
    return sorted(latencies)


async def concurrency() -> list[str]:
    telemetry, provider = _telemetry()
    behavior = ModelBehavior(latency=LATENCY, time_to_first_token=LATENCY)
    rows = []
    async with AgentRuntime(RuntimeSettings(), telemetry, model_behavior=behavior) as runtime:
        agent = runtime.agent
        await agent.arun("what is 1 + 1")
        for level in LEVELS:
            total = max(level, 50)
            start = time.perf_counter()
            latencies = await _at_concurrency(agent, level, total)
            wall = time.perf_counter() - start
            p95 = latencies[int(0.95 * (len(latencies) - 1))]
            rows.append((level, total, total / wall, statistics.median(latencies), p95))
    provider.shutdown()
    ideal = 1 / (2 * LATENCY)  # two model calls per run
    lines = [
        "## 6. Concurrency",
        "",
        f"Agent runs (one tool call, two model calls) against the builtin model over loopback "
        f"HTTP, {LATENCY * 1000:.0f} ms per answer; the floor for one run is "
        f"{2 * LATENCY * 1000:.0f} ms.",
        "",
        "| concurrent | runs | runs/s | ideal runs/s | p50 s | p95 s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for level, total, rate, p50, p95 in rows:
        lines.append(
            f"| {level} | {total} | {rate:,.1f} | {ideal * level:,.0f} | {p50:.3f} | {p95:.3f} |"
        )
    lines += [
        "",
        "Throughput scales with concurrency until the single event loop is busy all the "
        "time: every run costs CPU (LangGraph steps, the OpenAI client, JSON, the model "
        "server itself in the same process) and beyond that point more concurrency only "
        "queues runs, so p95 grows while runs/s stays flat. The agent admits 64 runs at "
        "once (AGENTWATCH_MAX_CONCURRENT_RUNS): before that limit, 1,000 concurrent runs "
        "fell to ~60 runs/s with p50 15 s (per-iteration work and connection churn past "
        "the OpenAI client's 100 keep-alive connections). Two cores, one loop: scale out "
        "with processes.",
        "",
    ]
    return lines


def _populated_registry() -> Telemetry:
    telemetry, _ = _telemetry()
    telemetry.tools.declare([f"tool_{i}" for i in range(20)])
    telemetry.models.declare([f"model_{i}" for i in range(5)])
    errors = ["", "RateLimitError", "APITimeoutError", "InternalServerError", "ValueError"]
    for m in range(5):
        for error in errors:
            for _ in range(3):
                call = telemetry.llm_call(f"model_{m}", "openai")
                call.set_response(input_tokens=100, output_tokens=50)
                call.on_chunk()
                call.on_chunk()
                call.fail(RuntimeError()) if error else call.stop()
    for t in range(20):
        for error in errors:
            tool = telemetry.tool_call(f"tool_{t}", agent_name="research_agent")
            if error:
                tool.fail(type(error, (Exception,), {})())
            else:
                tool.stop()
    return telemetry


async def scrape() -> list[str]:
    disable_created_metrics()  # as setup_telemetry() does in a service
    telemetry = _populated_registry()
    registry = telemetry.registry
    text, om = generate_latest(registry), openmetrics(registry)
    series = sum(1 for line in text.decode().splitlines() if line and not line.startswith("#"))
    renders = []
    for _ in range(20):
        start = time.perf_counter()
        openmetrics(registry)
        renders.append(time.perf_counter() - start)

    runner = web.AppRunner(create_metrics_app(telemetry), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:  # measures how late a 1 ms timer fires during scrapes
        loop = asyncio.get_running_loop()
        for _ in range(100_000):  # bounded
            if stop.is_set():
                return
            before = loop.time()
            await asyncio.sleep(0.001)
            lags.append(loop.time() - before - 0.001)

    tick = asyncio.create_task(ticker())
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            async with session.get(url, headers={"Accept": "application/openmetrics-text"}) as r:
                await r.read()
    stop.set()
    await tick
    await runner.cleanup()
    lags.sort()
    return [
        "## 7. /metrics scrape",
        "",
        f"20 tools x 5 models x 5 error types recorded: {series:,} sample lines; Prometheus "
        f"text {len(text) / 1024:,.0f} KiB, OpenMetrics (with exemplars) {len(om) / 1024:,.0f} "
        f"KiB; rendering OpenMetrics takes {statistics.median(renders) * 1000:.1f} ms "
        f"(median of 20). Over 20 scrapes through the aiohttp route (rendered in a worker "
        f"thread), a 1 ms timer on the event loop fired late by at most "
        f"{lags[-1] * 1000:.1f} ms (p99 {lags[int(0.99 * (len(lags) - 1))] * 1000:.1f} ms).",
        "",
    ]


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def memory_worker(closed_port: int) -> dict[str, int]:
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{closed_port}"
    os.environ["OTEL_EXPORTER_OTLP_TIMEOUT"] = "0.5"
    from agentwatch.runtime.builtin_model.in_process import BuiltinChatModel  # noqa: F401
    from agentwatch.runtime.tools import BUNDLED_CORPUS, SearchIndex, builtin_tools
    from agentwatch.telemetry import TelemetrySettings, build_telemetry

    from .bench_agent import InstrumentedBuiltinChatModel, agent_runner

    telemetry = build_telemetry(TelemetrySettings.from_env(), registry=CollectorRegistry())
    model = InstrumentedBuiltinChatModel(telemetry=telemetry, provider_name="agentwatch")
    run = agent_runner(model, builtin_tools(SearchIndex.from_folder(BUNDLED_CORPUS)), telemetry)
    marks = {}
    for i in range(1, 10_001):
        await run()
        if i in (1_000, 10_000):
            marks[f"rss_kib_{i}"] = _rss_kib()
    dropped = sum(
        int(telemetry.registry.get_sample_value(
            "agentwatch_telemetry_spans_dropped_total", {"reason": r}
        ) or 0)
        for r in ("queue_full", "export_failed", "shutdown")
    )  # fmt: skip
    marks["dropped_before_shutdown"] = dropped
    return marks


def memory() -> list[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_scale", "--memory", str(port)],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    marks = json.loads(out.stdout.strip().splitlines()[-1])
    growth = marks["rss_kib_10000"] - marks["rss_kib_1000"]
    return [
        "## 8. Memory with the trace backend down",
        "",
        f"One process, 10,000 agent runs (4 spans each) with OTLP export to a closed port: "
        f"RSS {marks['rss_kib_1000'] / 1024:.1f} MiB after 1,000 runs, "
        f"{marks['rss_kib_10000'] / 1024:.1f} MiB after 10,000 ({growth / 1024:+.1f} MiB); "
        f"{marks['dropped_before_shutdown']:,} spans counted as dropped by then. The span "
        "queue is bounded (2,048) and label children are bounded by the closed label sets.",
        "",
    ]


def run() -> list[str]:
    return asyncio.run(concurrency()) + asyncio.run(scrape()) + memory()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory":
        print(json.dumps(asyncio.run(memory_worker(int(sys.argv[2])))))
    else:
        print("\n".join(run()))
