"""The performance report reads the same numbers from a registry and from scraped text."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agentwatch.runtime.cli import main
from agentwatch.telemetry import (
    Telemetry,
    format_report,
    start_metrics_server,
    stats_from_registry,
    stats_from_text,
)


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
