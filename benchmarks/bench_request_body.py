"""The OpenAI SDK's request-body transform against ``agents/request_body.py``'s skip.

Two measures in one run: the function alone, on the bodies a real agent run sends
(captured from the SDK's own call: its first model call, then the one after the tool
answered), the SDK's transform and ``plain_body`` timed in turn; and whole agent runs at
0 s model latency (the loop's CPU sets the pace: 64 clients, a fixed 64) in rounds that
alternate the two, the order swapped each round (the machine's speed drifts).

``python -m benchmarks.bench_request_body`` writes its section into RESULTS.md
(replacing the one there), as ``make bench`` does.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any
from unittest import mock

import openai.resources.chat.completions.completions as completions
from openai._utils import _transform as sdk_transform
from openai.types.chat import completion_create_params
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from agentwatch.runtime.agents import agent_runtime, request_body
from agentwatch.runtime.builtin_model.behavior import DEFAULT_MODEL
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry

from .bench_admission import Point, measure, model_process, write

TITLE = "## 11e. The SDK's request-body transform, skipped"
CALLS = 2_000  # each timing: this many transforms of each body
ROUNDS = 6
CLIENTS = 64
TRANSFORM = "async_maybe_transform"  # the name the SDK's create() calls it by
WAYS = ("SDK transform", "skipped")
SYNC_TRANSFORM = "maybe_transform"  # install() wraps it too
PARAMS = completion_create_params.CompletionCreateParamsNonStreaming


async def captured_bodies(base_url: str) -> list[dict[str, Any]]:
    """The bodies one agent run's model calls hand the SDK's transform."""
    bodies: list[dict[str, Any]] = []

    async def capture(data: Any, expected_type: object) -> Any:
        bodies.append(data)
        return await sdk_transform.async_maybe_transform(data, expected_type)

    with mock.patch.object(completions, TRANSFORM, capture):
        await measure_once(base_url)
    return bodies[:2]


async def measure_once(base_url: str) -> None:
    settings = RuntimeSettings(api_key="bench", base_url=base_url, model=DEFAULT_MODEL)
    telemetry = Telemetry(tracer_provider=TracerProvider(), registry=CollectorRegistry())
    with mock.patch.object(agent_runtime, "skip_plain_body_transforms", return_value=None):
        async with agent_runtime.AgentRuntime(settings, telemetry) as runtime:
            await runtime.agent.arun("what is 2 + 3")


def both_ways() -> dict[str, Any]:
    """The SDK's transform and the one ``install()`` puts in front of it (installed on
    a copy: the module's names are as they were after)."""
    transform = sdk_transform.async_maybe_transform
    with (
        mock.patch.object(completions, TRANSFORM, transform),
        mock.patch.object(completions, SYNC_TRANSFORM, sdk_transform.maybe_transform),
    ):
        request_body.install()
        return dict(zip(WAYS, (transform, getattr(completions, TRANSFORM)), strict=True))


async def per_call(bodies: list[dict[str, Any]]) -> tuple[float, float]:
    """Seconds per body through each way, in turn (as the SDK's create() awaits it)."""
    totals = dict.fromkeys(WAYS, 0.0)
    for body in bodies:
        for way, function in both_ways().items():
            started = time.perf_counter()
            for _ in range(CALLS):
                await function(body, PARAMS)
            totals[way] += time.perf_counter() - started
    calls = CALLS * len(bodies)
    sdk, skip = (totals[way] / calls for way in WAYS)
    return sdk, skip


async def rounds(base_url: str) -> dict[str, list[Point]]:
    ways = both_ways()
    measured: dict[str, list[Point]] = {way: [] for way in ways}
    for n in range(ROUNDS):
        order = list(ways) if n % 2 == 0 else list(reversed(ways))
        for way in order:
            with (
                mock.patch.object(agent_runtime, "skip_plain_body_transforms", return_value=None),
                mock.patch.object(completions, TRANSFORM, ways[way]),
            ):
                point = await measure(base_url, way, 0.0, CLIENTS, CLIENTS)
            print(f"{way}: {point.runs_per_s:.1f} runs/s, loop busy {point.busy:.0%}", flush=True)
            measured[way].append(point)
    return measured


async def measured() -> tuple[tuple[float, float], dict[str, list[Point]]]:
    async with model_process(0.0) as base_url:
        bodies = await captured_bodies(base_url)
        return await per_call(bodies), await rounds(base_url)


def _cpu_ms(point: Point) -> float:
    return point.busy / max(point.runs_per_s, 1e-9) * 1000


def section(calls: tuple[float, float], runs: dict[str, list[Point]]) -> list[str]:
    sdk, skip = calls
    (first, before), (second, after) = runs.items()
    ratios = [a.runs_per_s / max(b.runs_per_s, 1e-9) for b, a in zip(before, after, strict=True)]
    cpu = [_cpu_ms(a) / max(_cpu_ms(b), 1e-9) for b, a in zip(before, after, strict=True)]
    lines = [
        TITLE,
        "",
        "Per call: the two bodies of an agent run (its first model call, the one after "
        f"the tool), {CALLS:,} times each. Whole runs: {CLIENTS} clients, a fixed "
        f"{CLIENTS}, 0 s model latency (bench_admission's measure), {ROUNDS} rounds "
        "alternating the two (order swapped each round); loop CPU per run: the loop "
        "thread's CPU over the window / runs.",
        "",
        "| | per call µs | runs/s (median) | loop CPU per run ms (median) |",
        "|---|---:|---:|---:|",
        f"| {first} | {sdk * 1e6:.0f} | {statistics.median(p.runs_per_s for p in before):.1f} "
        f"| {statistics.median(_cpu_ms(p) for p in before):.2f} |",
        f"| {second} | {skip * 1e6:.1f} | {statistics.median(p.runs_per_s for p in after):.1f} "
        f"| {statistics.median(_cpu_ms(p) for p in after):.2f} |",
        "",
        f"Reading: skipped, a call's body costs {skip / max(sdk, 1e-12):.3f}x; whole runs "
        f"{statistics.median(ratios):.2f}x the runs/s (each round's: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + f") at {statistics.median(cpu):.2f}x the loop's CPU per run.",
        "",
    ]
    return lines


def run() -> list[str]:
    calls, runs = asyncio.run(measured())
    return section(calls, runs)


if __name__ == "__main__":
    write(run())
