"""setup_telemetry(): one composition root, idempotent, honouring OTEL_SDK_DISABLED."""

from __future__ import annotations

import subprocess
import sys

from prometheus_client import CollectorRegistry

from agentwatch.telemetry import TelemetrySettings, build_telemetry


def fresh_process(script: str) -> str:
    """Run ``script`` in a new interpreter (setup_telemetry() touches process globals)."""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"OTEL_TRACES_EXPORTER": "none", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


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
