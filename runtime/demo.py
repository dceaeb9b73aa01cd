"""``agentwatch demo``: a workload observed end to end, scraped and reported.

It serves the telemetry routes on loopback, runs concurrent observed operations that
do real work (HTTP round trips to its own health route, hashing), then scrapes its own
``/metrics`` like Prometheus would and prints the performance report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os

import aiohttp
from aiohttp import web

from agentwatch.telemetry import (
    Telemetry,
    TelemetrySettings,
    create_metrics_app,
    format_report,
    setup_telemetry,
    stats_from_text,
)
from agentwatch.telemetry.settings import OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_EXPORTER


def setup() -> Telemetry:
    """The demo's telemetry. Without a configured trace backend the demo keeps its spans
    in-process (they still give the exemplars) rather than retrying a collector that is
    not there."""
    settings = TelemetrySettings.from_env()
    if not any(key in os.environ for key in (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_EXPORTER)):
        settings = dataclasses.replace(settings, traces_exporter="none")
    return setup_telemetry(settings)


async def main(telemetry: Telemetry, port: int = 0, rounds: int = 50) -> int:
    runner = web.AppRunner(create_metrics_app(telemetry), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    base = f"http://127.0.0.1:{bound}"
    try:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(_research(telemetry, session, base, i) for i in range(rounds)))
            async with session.get(f"{base}/metrics") as response:
                text = await response.text()
        print(format_report(stats_from_text(text), title=f"Performance report ({base}/metrics)"))
        print(f"Metrics were served at {base}/metrics (the demo has ended).")
    finally:
        await runner.cleanup()
        telemetry.shutdown(timeout=2.0)
    return 0


async def _research(
    telemetry: Telemetry, session: aiohttp.ClientSession, base: str, index: int
) -> None:
    async with telemetry.observe("research", query_index=index):
        async with telemetry.observe("fetch"), session.get(f"{base}/healthz") as response:
            body = await response.read()
        async with telemetry.observe("digest"):
            data = body * (1000 + index * 100)
            hashlib.sha256(data).hexdigest()
