"""Spans really leave the process, and a backend that is down costs telemetry only."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from agentwatch.telemetry import TelemetrySettings, build_telemetry

from .conftest import OtlpReceiver, attributes

pytestmark = pytest.mark.integration


async def test_spans_reach_an_otlp_http_receiver_with_attributes_and_parent(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "otlp-test")
    telemetry = await asyncio.to_thread(
        build_telemetry, TelemetrySettings.from_env(), registry=CollectorRegistry()
    )

    async with telemetry.observe("parent", job="nightly"), telemetry.observe("child", step=2):
        pass
    # The exporter is synchronous: flush from a thread so the receiver (on this loop) runs.
    await asyncio.to_thread(telemetry.shutdown, 10.0)

    parent = otlp_receiver.span_named("parent")
    child = otlp_receiver.span_named("child")
    assert child.parent_span_id == parent.span_id
    assert child.trace_id == parent.trace_id
    assert attributes(parent) == {"job": "nightly"}
    assert attributes(child)["step"] == 2
    assert otlp_receiver.resources[0]["service.name"] == "otlp-test"


async def test_backend_down_loses_spans_not_calls(
    closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
    registry = CollectorRegistry()
    telemetry = await asyncio.to_thread(
        build_telemetry, TelemetrySettings.from_env(), registry=registry
    )

    @telemetry.observe("call")
    async def call(i: int) -> int:
        return i

    results = [await call(i) for i in range(10_000)]
    assert results == list(range(10_000))
    await asyncio.to_thread(telemetry.shutdown, 10.0)

    assert (
        registry.get_sample_value(
            "agentwatch_operation_duration_seconds_count", {"operation": "call", "error_type": ""}
        )
        == 10_000
    )
    dropped = {
        reason: registry.get_sample_value(
            "agentwatch_telemetry_spans_dropped_total", {"reason": reason}
        )
        or 0.0
        for reason in ("queue_full", "export_failed", "shutdown")
    }
    # Every span is counted once under some reason; how they split between a full queue
    # and failed exports depends on how fast this machine's export thread runs.
    assert sum(dropped.values()) == 10_000, dropped
