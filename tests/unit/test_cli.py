"""The `agentwatch` command line: report, run, demo, and what a user's mistakes print."""

from __future__ import annotations

import argparse
import asyncio
import errno
from collections.abc import Iterator
from functools import partial

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.runtime.agents.agent_runtime import AgentRuntime
from agentwatch.runtime.cli import main as cli
from agentwatch.runtime.cli.main import (
    EXIT_CANNOT_LISTEN,
    EXIT_MODEL_FAILED,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    build_parser,
    main,
)
from agentwatch.runtime.results import trace_line
from agentwatch.runtime.settings import RuntimeSettings, SettingError
from agentwatch.runtime.tools.search import SearchIndex
from agentwatch.telemetry import Telemetry, TelemetrySettings, start_metrics_server
from agentwatch.telemetry.setup import build_telemetry
from tests.helpers import free_port, run_cli


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


def test_run_prints_the_answer_and_says_its_trace_is_not_exported() -> None:
    """By default (no OTLP endpoint) spans are exported nowhere: `run` says so and prints
    no trace id, which no backend would have (before: "spans are not exported" on
    stderr, then a trace_id)."""
    out = run_cli("run", "what is 123 + 456", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "579" in out.stdout
    assert "spans are not exported" in out.stderr
    assert out.stdout.splitlines()[-1].startswith("trace not exported  tokens: ")
    assert "trace_id" not in out.stdout


def test_run_stream_prints_tool_calls_then_the_answer() -> None:
    out = run_cli("run", "--stream", "what is 6 * 7", timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "[tool calculator {'expression': '6 * 7'}]"
    assert lines[1] == "[tool calculator -> ok: 42]"
    assert lines[2] == "The answer is 42."
    assert lines[3].startswith("trace not exported  tokens: ")


async def test_a_run_reports_its_trace_id_only_when_spans_are_exported() -> None:
    """`RunResult.trace_id` is "" when no exporter sends spans anywhere (sampled, but no
    backend will have it); with an exporter it is the exported trace's id."""
    exporter = InMemorySpanExporter()
    build = partial(asyncio.to_thread, build_telemetry)
    exporting = await build(registry=CollectorRegistry(), span_exporter=exporter)
    # the default policy: no OTLP endpoint and no OTEL_TRACES_EXPORTER, no export
    nowhere = await build(TelemetrySettings.from_env({}), registry=CollectorRegistry())
    found = {}
    try:
        for name, telemetry in (("exporting", exporting), ("nowhere", nowhere)):
            async with AgentRuntime(RuntimeSettings(), telemetry) as runtime:
                found[name] = await runtime.agent.arun("hi")
    finally:
        await asyncio.to_thread(exporting.shutdown)
        await asyncio.to_thread(nowhere.shutdown)
    exported = {format(s.context.trace_id, "032x") for s in exporter.get_finished_spans()}
    assert found["exporting"].trace_id in exported
    assert (found["nowhere"].trace_id, found["nowhere"].sampled) == ("", True)
    assert trace_line(found["nowhere"]) == "trace not exported"
    assert trace_line(found["exporting"]) == f"trace_id: {found['exporting'].trace_id}"


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
        "chat gpt-4o-mini",  # the builtin model answering as a priced model
        "total cost: $",
    ):
        assert expected in text, expected
    attempts = text.split("Model call attempts:", 1)[1]
    assert "retry " in attempts


# --- a new user's mistakes: one line naming what they typed, a documented exit code ---


def _all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"{p.prog} {'/'.join(a.option_strings) or a.dest}"
        for p in _all_parsers(build_parser())
        for a in p._actions
        if not a.help or a.help == argparse.SUPPRESS
    ]
    assert missing == []
    commands = {p.prog for p in _all_parsers(build_parser())}
    assert {f"agentwatch {c}" for c in ("demo", "serve", "run", "batch", "report", "model")} <= (
        commands
    )


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    for code in (EXIT_USAGE, EXIT_CANNOT_LISTEN, EXIT_MODEL_FAILED, 3, 4, 7):
        assert f"\n  {code} " in out


def test_version_is_the_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"agentwatch {version('agentwatch')}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "99999"], "agentwatch serve: --port must be 0-65535, got 99999"),
        (
            ["serve", "--port", "http"],
            "agentwatch serve: --port must be a port number 0-65535, got 'http'",
        ),
        (["model", "--port", "70000"], "agentwatch model: --port must be 0-65535, got 70000"),
        (["demo", "--port", "-1"], "agentwatch demo: --port must be 0-65535, got -1"),
        (
            ["model", "--error-rate", "1.5"],
            "agentwatch model: --error-rate must be between 0 and 1, got 1.5",
        ),
        (
            ["model", "--fail-status", "200"],
            "agentwatch model: --fail-status must be an HTTP error status 400-599, got 200",
        ),
        (["model", "--latency", "-2"], "agentwatch model: --latency must not be negative, got -2"),
        (["model", "--ttft", "nan"], "agentwatch model: --ttft must be a number, got 'nan'"),
        (["report", "--timeout", "0"], "agentwatch report: --timeout must be positive, got 0"),
        (
            ["batch", "t.jsonl", "--out", "o.jsonl", "--workers", "0"],
            "agentwatch batch: --workers must be at least 1, got 0",
        ),
        (
            ["batch", "t.jsonl", "--out", "o.jsonl", "--concurrency", "0"],
            "agentwatch batch: --concurrency must be at least 1, got 0",
        ),
        (
            ["batch", "t.jsonl", "--out", "o.jsonl", "--timeout", "-1"],
            "agentwatch batch: --timeout must be positive, got -1",
        ),
    ],
)
def test_a_bad_flag_value_is_one_line_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == EXIT_USAGE
    assert capsys.readouterr().err == message + "\n"


def test_settings_name_the_variable_the_value_came_from() -> None:
    with pytest.raises(SettingError, match=r"^AGENTWATCH_PORT must be 0-65535, got 99999$"):
        RuntimeSettings.from_env({"AGENTWATCH_PORT": "99999"})
    with pytest.raises(SettingError, match=r"^AGENTWATCH_PORT must be a whole number, got 'x'$"):
        RuntimeSettings.from_env({"AGENTWATCH_PORT": "x"})
    with pytest.raises(SettingError, match=r"^AGENTWATCH_RUN_TIMEOUT must be positive, got 0$"):
        RuntimeSettings.from_env({"AGENTWATCH_RUN_TIMEOUT": "0"})


def test_settings_name_the_flag_when_the_value_came_from_one() -> None:
    with pytest.raises(SettingError, match=r"^--port must be 0-65535, got 99999$"):
        RuntimeSettings.from_env({}, overrides={"port": 99999}, sources={"port": "--port"})
    # the flag wins: a bad variable it overrides is not even read
    settings = RuntimeSettings.from_env(
        {"AGENTWATCH_PORT": "junk"}, overrides={"port": 9000}, sources={"port": "--port"}
    )
    assert settings.port == 9000


def test_settings_built_in_code_name_the_field() -> None:
    with pytest.raises(SettingError, match=r"^port must be 0-65535, got 70000$"):
        RuntimeSettings(port=70000)
    with pytest.raises(SettingError, match=r"^max_concurrent_runs must not be negative"):
        RuntimeSettings(max_concurrent_runs=-1)


def test_a_bad_variable_is_a_usage_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTWATCH_RUN_TIMEOUT", "0")
    assert main(["run", "what is 1 + 1"]) == EXIT_USAGE
    assert capsys.readouterr().err.splitlines()[-1] == (
        "agentwatch run: AGENTWATCH_RUN_TIMEOUT must be positive, got 0"
    )


def _bug(args: argparse.Namespace) -> int:
    raise RuntimeError("something inside broke\nacross two lines")


def test_an_unexpected_error_is_one_line_with_the_debug_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AGENTWATCH_DEBUG", raising=False)
    monkeypatch.setattr(cli, "report_command", _bug)  # a bug cannot be caused from outside
    assert main(["report"]) == EXIT_UNEXPECTED
    assert capsys.readouterr().err == (
        "agentwatch report: unexpected error: RuntimeError: something inside broke across two "
        "lines; rerun with AGENTWATCH_DEBUG=1 for the traceback\n"
    )


def test_agentwatch_debug_prints_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTWATCH_DEBUG", "1")
    monkeypatch.setattr(cli, "report_command", _bug)
    assert main(["report"]) == EXIT_UNEXPECTED
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.endswith(
        "agentwatch report: unexpected error: RuntimeError: something inside "
        "broke across two lines\n"
    )


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_start_up_error_is_not_blamed_on_the_port(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An OSError of the app's own start-up (here the corpus folder not readable:
    EACCES, which root cannot meet on a real file) is not "cannot listen on ... (--port)":
    only the bind's own failure is (``BindError``)."""

    def unreadable(folder: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/corpus")

    monkeypatch.setattr(SearchIndex, "from_folder", unreadable)
    monkeypatch.delenv("AGENTWATCH_DEBUG", raising=False)
    code = main([command, "--port", str(free_port())])
    err = capsys.readouterr().err
    assert code != EXIT_CANNOT_LISTEN, err
    assert "cannot listen" not in err
    assert "Permission denied: '/srv/corpus'" in err
