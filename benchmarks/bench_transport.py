"""The model client's HTTP transport at issue 18's point (1 s model, 400 clients):
httpx's (the OpenAI SDK's default) against aiohttp's (``agents/model_http.py``'s
``ModelHttpClient``, the SDK's ``DefaultAioHttpClient``: what ``agent_runtime.HTTP_CLIENT``
builds), for a fixed limit of 160 and no limit.

Past ~100 model calls at once, the loop's CPU per run was higher with httpx's pool, and
with it the loop's lag at a given throughput. Rounds alternate through the four
(a busy moment of a shared machine falls on all), each point as bench_admission
measures it; the medians are shown.

``python -m benchmarks.bench_transport`` writes its section into RESULTS.md (replacing
the one there), as ``make bench`` does.
"""

from __future__ import annotations

from unittest import mock

import openai

from agentwatch.runtime.agents import agent_runtime
from agentwatch.runtime.agents.model_http import ModelHttpClient
from agentwatch.runtime.cli import event_loop

from .bench_admission import (
    ISSUE_POINT,
    Point,
    measure,
    median_of,
    model_process,
    rate_at_lag,
    write,
)

ROUNDS = 2
TITLE = "## 11c. Model client transport at 1 s model latency, 400 clients"
TRANSPORTS = {"httpx": openai.DefaultAsyncHttpxClient, "aiohttp": ModelHttpClient}
LIMITS = {"fixed 160": 160, "no limit": 0}


async def rounds() -> dict[tuple[str, str], list[Point]]:
    latency, clients = ISSUE_POINT
    measured: dict[tuple[str, str], list[Point]] = {(t, p): [] for t in TRANSPORTS for p in LIMITS}
    async with model_process(latency) as base_url:
        for _ in range(ROUNDS):
            for policy, limit in LIMITS.items():
                for transport, client in TRANSPORTS.items():
                    with mock.patch.object(agent_runtime, "HTTP_CLIENT", client):
                        point = await measure(base_url, policy, latency, clients, limit)
                    print(
                        f"{transport}, {policy}: {point.runs_per_s:.1f} runs/s, lag p99 "
                        f"{point.lag_p99 * 1000:.0f} ms (own {point.own_lag_p99 * 1000:.0f})",
                        flush=True,
                    )
                    measured[(transport, policy)].append(point)
    return measured


def section(measured: dict[tuple[str, str], list[Point]]) -> list[str]:
    lines = [
        TITLE,
        "",
        "As section 11 (the heap settled, the builtin model in its own process), "
        f"{ROUNDS} rounds through the four in turn; medians, and each round's figures.",
        "",
        "| transport | limit | runs/s | loop lag p99 ms | own lag p99 ms "
        "| rounds: runs/s @ lag ms |",
        "|---|---|---:|---:|---:|---|",
    ]
    medians = {}
    for (transport, policy), points in measured.items():
        median = median_of(points)
        rate, lag, own = median.runs_per_s, median.lag_p99, median.own_lag_p99
        medians[(transport, policy)] = (rate, lag)
        each = ", ".join(map(rate_at_lag, points))
        lines.append(
            f"| {transport} | {policy} | {rate:.1f} | {lag * 1000:.0f} | {own * 1000:.0f} "
            f"| {each} |"
        )
    parts = []
    for policy in LIMITS:
        (h_rate, h_lag), (a_rate, a_lag) = medians[("httpx", policy)], medians[("aiohttp", policy)]
        parts.append(
            f"{policy}: aiohttp {a_rate / max(h_rate, 1e-9):.2f}x httpx's runs/s at "
            f"{a_lag / max(h_lag, 1e-9):.2f}x its lag p99"
        )
    return [*lines, "", "Reading: " + "; ".join(parts) + ".", ""]


def run() -> list[str]:
    return section(event_loop.run(rounds(), event_loop.loop_factory()))


if __name__ == "__main__":
    write(run())
