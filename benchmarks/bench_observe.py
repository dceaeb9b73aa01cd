"""Cost of observe() per call against a bare await and a bare OpenTelemetry span.

All three variants run in one process, interleaved trial by trial, through the same
trace pipeline (SDK BatchSpanProcessor into a discarding exporter), so the ratios
compare like with like on a noisy machine. Target: observe() adds at most 1.5x what a
bare span adds (the span is the floor; metric and exemplar must be nearly free).
"""

from __future__ import annotations

import asyncio
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry

from agentwatch.telemetry import Telemetry

from .common import DiscardingExporter, Measured

CALLS = 20_000
TRIALS = 7


async def _work() -> int:
    return 1


async def _bare(n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        await _work()
    return (time.perf_counter_ns() - start) / n


async def _span(provider: TracerProvider, n: int) -> float:
    tracer = provider.get_tracer("bench")
    start = time.perf_counter_ns()
    for _ in range(n):
        with tracer.start_as_current_span("work"):
            await _work()
    return (time.perf_counter_ns() - start) / n


async def _observe(telemetry: Telemetry, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        async with telemetry.observe("work"):
            await _work()
    return (time.perf_counter_ns() - start) / n


async def _decorated(telemetry: Telemetry, n: int) -> float:
    work = telemetry.observe("work")(_work)
    start = time.perf_counter_ns()
    for _ in range(n):
        await work()
    return (time.perf_counter_ns() - start) / n


async def measure(calls: int = CALLS, trials: int = TRIALS) -> dict[str, Measured]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingExporter(), max_queue_size=8192))
    telemetry = Telemetry(tracer_provider=provider, registry=CollectorRegistry())
    results: dict[str, list[float]] = {
        "bare await": [],
        "bare span": [],
        "observe": [],
        "decorator": [],
    }
    await _observe(telemetry, 1000)  # warm up label children and code paths
    for _ in range(trials):
        results["bare await"].append(await _bare(calls))
        results["bare span"].append(await _span(provider, calls))
        results["observe"].append(await _observe(telemetry, calls))
        results["decorator"].append(await _decorated(telemetry, calls))
    provider.shutdown()
    return {name: Measured(name, tuple(values)) for name, values in results.items()}


def report(results: dict[str, Measured]) -> list[str]:
    bare = results["bare await"].median
    span_cost = results["bare span"].median - bare
    lines = [
        "## 1. observe() per call",
        "",
        f"{CALLS:,} calls x {TRIALS} interleaved trials; ns per call (median, range).",
        "",
        "| variant | ns/call | range | added over bare await | vs bare span's added cost |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in results.values():
        added = m.median - bare
        ratio = f"{added / span_cost:.2f}x" if m.name != "bare await" else "-"
        lines.append(f"| {m.name} | {m.median:,.0f} | {m.spread} | {added:,.0f} | {ratio} |")
    observe_ratio = (results["observe"].median - bare) / span_cost
    verdict = "met" if observe_ratio <= 1.5 else "NOT met"
    lines += [
        "",
        f"Target observe() <= 1.5x a bare span's cost: {observe_ratio:.2f}x ({verdict}).",
        "",
    ]
    return lines


def run() -> list[str]:
    return report(asyncio.run(measure()))
