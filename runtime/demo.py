"""``agentwatch demo``: the service under a workload, observed end to end.

It starts the service (with the builtin model) on a loopback port, sends concurrent
research queries through ``POST /v1/runs`` over real HTTP, then scrapes its own
``/metrics`` as Prometheus would and prints the performance report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os

import aiohttp
from aiohttp import web

from agentwatch.telemetry import (
    Telemetry,
    TelemetrySettings,
    format_report,
    setup_telemetry,
    stats_from_text,
)
from agentwatch.telemetry.settings import OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_EXPORTER

from .server import create_app
from .settings import RuntimeSettings

QUERIES = (
    "what is 123 + 456",
    "search for exemplars",
    "calculate (17 * 23) - 4 ** 3",
    "find docs about label cardinality",
    "what is 2 ^ 32",
    "look up retries with jitter",
    "calculate __import__('os')",
    "hello",
)


def setup() -> Telemetry:
    """The demo's telemetry. Without a configured trace backend the demo keeps its spans
    in-process (they still give the exemplars) rather than retrying a collector that is
    not there."""
    settings = TelemetrySettings.from_env()
    if not any(key in os.environ for key in (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_EXPORTER)):
        settings = dataclasses.replace(settings, traces_exporter="none")
    return setup_telemetry(settings)


async def main(telemetry: Telemetry, port: int = 0, rounds: int = 5) -> int:
    settings = dataclasses.replace(RuntimeSettings.from_env(), port=port)
    runner = web.AppRunner(
        create_app(settings, telemetry), access_log=None, handler_cancellation=True
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            queries = [q for _ in range(rounds) for q in QUERIES]
            print(f"Sending {len(queries)} concurrent runs to {base}/v1/runs ...")
            results = await asyncio.gather(*(_run(session, base, q) for q in queries))
            for query, (status, body) in list(zip(queries, results, strict=True))[: len(QUERIES)]:
                print(f"  [{status}] {query!r} -> {str(body.get('output', body))[:90]}")
            async with session.get(f"{base}/metrics") as response:
                text = await response.text()
        print()
        print(format_report(stats_from_text(text), title=f"Performance report ({base}/metrics)"))
        print("Run `agentwatch serve` to keep the service up; /metrics is then at")
        print("http://127.0.0.1:8080/metrics (see dashboards/ for Prometheus and Grafana).")
    finally:
        await runner.cleanup()
        telemetry.shutdown(timeout=2.0)
    return 0


async def _run(
    session: aiohttp.ClientSession, base: str, query: str
) -> tuple[int, dict[str, object]]:
    async with session.post(f"{base}/v1/runs", json={"input": query}) as response:
        return response.status, await response.json()
