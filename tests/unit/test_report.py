"""The performance report reads the same numbers from a registry and from scraped text."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from aiohttp import ClientConnectionResetError, web
from prometheus_client import CollectorRegistry, generate_latest

from agentwatch.runtime.cli.main import main
from agentwatch.telemetry import (
    Telemetry,
    fetch_metrics_text,
    format_report,
    start_metrics_server,
    stats_from_registry,
    stats_from_text,
)
from agentwatch.telemetry.report import MAX_METRICS_BYTES


async def test_report_from_registry_and_from_text_agree(registry: CollectorRegistry) -> None:
    ticks = iter(x for pair in [(0.0, d) for d in (0.002, 0.004, 0.02, 0.3)] for x in pair)
    telemetry = Telemetry(registry=registry, clock=lambda: next(ticks))
    for _ in range(3):
        async with telemetry.observe("search"):
            pass
    with pytest.raises(ValueError, match="boom"):
        async with telemetry.observe("search"):
            raise ValueError("boom")

    live = {r.name: r for r in stats_from_registry(registry)}
    scraped = {r.name: r for r in stats_from_text(generate_latest(registry).decode())}
    for rows in (live, scraped):
        row = rows["search"]
        assert (row.calls, row.errors) == (4, 1)
        assert math.isclose(row.avg, (0.002 + 0.004 + 0.02 + 0.3) / 4)
        assert row.min_bound == 0.0025
        assert row.max_bound == 0.5
        assert 0.25 < row.quantile(0.95) <= 0.5
    text = format_report(list(live.values()))
    assert "search" in text
    assert "<=2.5ms" in text
    assert "<=500.0ms" in text


def test_empty_report_says_so() -> None:
    assert "no operations recorded" in format_report([])


def test_report_on_a_page_that_is_not_metrics_says_so_in_one_line(
    telemetry: Telemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_metrics_server(telemetry, port=0)
    try:
        url = f"http://127.0.0.1:{server.port}/healthz"  # a real page, JSON not metrics
        assert main(["report", "--url", url]) == 2
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert err == f"agentwatch report: {url} is not a Prometheus metrics page\n"


def _endless(pause: float, chunk: bytes, sent: list[int]) -> web.Application:
    """A page that never ends: ``chunk`` after ``chunk`` (at most 256 MiB, or 40 s)."""

    async def page(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for _ in range(min((256 << 20) // len(chunk), int(40 / max(pause, 1e-3)))):  # bounded
            if request.transport is None or request.transport.is_closing():
                break  # the reader gave up: what the test wants
            try:
                await response.write(chunk)
            except (ConnectionResetError, ClientConnectionResetError):
                break  # the reader gave up: what the test wants
            sent[0] += len(chunk)
            if pause:
                await asyncio.sleep(pause)  # the trickle being simulated
        return response

    app = web.Application()
    app.router.add_get("/metrics", page)
    return app


async def test_report_on_a_page_that_never_ends_stops_at_64_mib(
    aiohttp_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sent = [0]
    server = await aiohttp_server(_endless(0.0, b"# " + b"x" * 65_000 + b"\n", sent))
    url = f"http://127.0.0.1:{server.port}/metrics"
    code = await asyncio.to_thread(main, ["report", "--url", url, "--timeout", "60"])
    assert code == 2
    err = capsys.readouterr().err
    assert err == (
        f"agentwatch report: cannot read {url}: the page is larger than 64 MiB; "
        "a metrics page is far smaller\n"
    )  # the old code read on (12.9 GB in 30 s), here until the server's 256 MiB bound
    assert sent[0] < MAX_METRICS_BYTES + (16 << 20)  # the reader stopped soon after 64 MiB


async def test_a_page_that_trickles_stops_at_the_timeout(aiohttp_server: Any) -> None:
    sent = [0]
    server = await aiohttp_server(_endless(0.05, b"# x\n", sent))
    url = f"http://127.0.0.1:{server.port}/metrics"
    with pytest.raises(ValueError, match=r"did not arrive within 0\.5 s"):
        await asyncio.to_thread(fetch_metrics_text, url, 0.5)
    with pytest.raises(ValueError, match="larger than 100 bytes"):
        await asyncio.to_thread(fetch_metrics_text, url, 30, 100)
