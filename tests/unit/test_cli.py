"""`agentwatch report --url` against a real /metrics server on loopback."""

from __future__ import annotations

import pytest

from agentwatch.runtime.cli import main
from agentwatch.telemetry import Telemetry, start_metrics_server
from tests.helpers import run_cli


async def _observed(telemetry: Telemetry) -> None:
    async with telemetry.observe("classify"):
        pass


def test_report_from_url(telemetry: Telemetry, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    for _ in range(7):
        asyncio.run(_observed(telemetry))
    server = start_metrics_server(telemetry, port=0)
    try:
        assert main(["report", "--url", f"http://127.0.0.1:{server.port}/metrics"]) == 0
    finally:
        server.stop()
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("classify"))
    assert line.split()[1:3] == ["7", "0"]


def test_report_from_unreachable_url_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--url", "http://127.0.0.1:9/metrics", "--timeout", "2"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_run_prints_the_answer_and_trace_id() -> None:
    out = run_cli("run", "what is 123 + 456", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "579" in out.stdout
    assert "trace_id: " in out.stdout


def test_run_stream_prints_tool_calls_then_the_answer() -> None:
    out = run_cli("run", "--stream", "what is 6 * 7", timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "[tool calculator {'expression': '6 * 7'}]"
    assert lines[1] == "[tool calculator -> ok: 42]"
    assert lines[2] == "The answer is 42."
    assert lines[3].startswith("trace_id: ")


def test_demo_drives_every_scenario_and_prints_the_report() -> None:
    out = run_cli("demo", timeout=180, COLUMNS="120")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for expected in (
        "The answer is 579.",
        "finished: {'completed': 60}",
        "a retry storm",
        "invoke_agent research_agent",
        "execute_tool calculator",
        "batch_task",
    ):
        assert expected in text, expected
    attempts = text.split("Model call attempts:", 1)[1]
    assert "retry " in attempts
