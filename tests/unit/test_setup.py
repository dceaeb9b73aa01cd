"""setup_telemetry(): one composition root, idempotent, honouring OTEL_SDK_DISABLED."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.telemetry import ConfigurationError, TelemetrySettings, build_telemetry
from agentwatch.telemetry.setup import DEFAULT_ATTRIBUTE_LENGTH, span_limits
from tests.helpers import free_port


def fresh_process(script: str, env: dict[str, str] | None = None) -> str:
    """Run ``script`` in a new interpreter (setup_telemetry() touches process globals)."""
    return run_fresh(script, {"OTEL_TRACES_EXPORTER": "none"} if env is None else env).stdout


def run_fresh(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    out.stdout = out.stdout.strip()
    return out


def test_setup_is_idempotent_and_installs_the_global_provider() -> None:
    script = (
        "from opentelemetry import trace\n"
        "from agentwatch.telemetry import setup_telemetry, get_telemetry\n"
        "a = setup_telemetry(); b = setup_telemetry()\n"
        "assert a is b is get_telemetry(), 'not idempotent'\n"
        "assert trace.get_tracer_provider() is a.tracer_provider\n"
        "a.shutdown(1.0)\n"
        "print('ok')\n"
    )
    assert fresh_process(script) == "ok"


def test_setup_after_early_use_configures_and_keeps_the_metrics() -> None:
    """observe() used before setup_telemetry() falls back to a default; setting up later
    must still configure tracing, and keep what was recorded."""
    script = (
        "import asyncio\n"
        "from prometheus_client import REGISTRY\n"
        "from agentwatch.telemetry import observe, setup_telemetry, get_telemetry\n"
        "async def early():\n"
        "    async with observe('early'): pass\n"
        "asyncio.run(early())\n"
        "t = setup_telemetry()\n"
        "assert t is get_telemetry() and t.tracer_provider is not None, 'not configured'\n"
        "asyncio.run(early())\n"
        "n = REGISTRY.get_sample_value('agentwatch_operation_duration_seconds_count',\n"
        "                              {'operation': 'early', 'error_type': ''})\n"
        "assert n == 2, n\n"
        "t.shutdown(1.0)\n"
        "print('ok')\n"
    )
    assert fresh_process(script) == "ok"


async def test_sdk_disabled_keeps_metrics_and_makes_no_spans() -> None:
    registry = CollectorRegistry()
    telemetry = build_telemetry(TelemetrySettings(sdk_disabled=True), registry=registry)
    async with telemetry.observe("quiet") as invocation:
        assert not invocation.span.is_recording()
    assert invocation.trace_id == ""
    assert (
        registry.get_sample_value(
            "agentwatch_operation_duration_seconds_count",
            {"operation": "quiet", "error_type": ""},
        )
        == 1
    )


EXPORT_SCRIPT = (
    "from prometheus_client import REGISTRY\n"
    "from agentwatch.telemetry import setup_telemetry\n"
    "t = setup_telemetry(); setup_telemetry()\n"
    "t.tracer.start_span('one').end()\n"
    "t.shutdown(1.0)\n"
    "print(sum(REGISTRY.get_sample_value('agentwatch_telemetry_spans_dropped_total',\n"
    "          {'reason': r}) or 0 for r in ('queue_full', 'export_failed', 'shutdown')))\n"
)


def test_without_an_endpoint_nothing_is_exported_and_it_is_said_once() -> None:
    """The policy of every command (serve, run, batch, demo) and of setup_telemetry():
    no OTLP endpoint and no OTEL_TRACES_EXPORTER, no export and no retry warnings."""
    out = run_fresh(EXPORT_SCRIPT, {})
    assert out.stdout == "0"  # nothing was sent, so nothing was lost
    assert out.stderr.splitlines() == [
        "agentwatch: spans are not exported (no OTEL_EXPORTER_OTLP_ENDPOINT set; "
        "set it, or OTEL_TRACES_EXPORTER=otlp, to export them)"
    ]


def test_an_endpoint_turns_export_on() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # down: the one span is counted lost
    out = run_fresh(EXPORT_SCRIPT, {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    assert out.stdout == "1.0"
    assert "agentwatch: spans are not exported" not in out.stderr


def test_span_limits_come_from_the_settings_not_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``TelemetrySettings.from_env(env)`` decides the span limits (STYLE rule 11): the
    process's own OTEL_*_LIMIT variables are not read behind the settings' back."""
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "7")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "1")
    defaults = span_limits(TelemetrySettings.from_env({}))
    assert defaults.max_span_attribute_length == DEFAULT_ATTRIBUTE_LENGTH
    assert (defaults.max_events, defaults.max_span_attributes) == (128, 128)
    injected = TelemetrySettings.from_env(
        {
            "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "50",
            "OTEL_ATTRIBUTE_COUNT_LIMIT": "9",
            "OTEL_SPAN_LINK_COUNT_LIMIT": "unset",
        }
    )
    limits = span_limits(injected)
    assert limits.max_span_attribute_length == 50
    assert limits.max_attribute_length is None  # only the span's own length was set
    assert (limits.max_span_attributes, limits.max_event_attributes) == (9, 9)
    assert (limits.max_events, limits.max_links) == (128, None)
    exporter = InMemorySpanExporter()
    telemetry = build_telemetry(injected, registry=CollectorRegistry(), span_exporter=exporter)
    assert telemetry.tracer_provider is not None
    telemetry.tracer_provider.get_tracer("t").start_span("s", attributes={"a": "x" * 99}).end()
    telemetry.shutdown()
    (span,) = exporter.get_finished_spans()
    assert (span.attributes or {})["a"] == "x" * 50


def test_a_bad_span_limit_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="OTEL_SPAN_EVENT_COUNT_LIMIT='-1'"):
        TelemetrySettings.from_env({"OTEL_SPAN_EVENT_COUNT_LIMIT": "-1"})
