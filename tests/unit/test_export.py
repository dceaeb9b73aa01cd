"""Span export counts every span it loses, by reason, without a log record per span."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from agentwatch.telemetry import Telemetry
from agentwatch.telemetry._export import CountingBatchSpanProcessor


class BlockedExporter(SpanExporter):
    """A backend that hangs until released, then refuses everything."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.batches = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches += 1
        self.release.wait(10)
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.release.set()


def dropped(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value(
        "agentwatch_telemetry_spans_dropped_total", {"reason": reason}
    )
    return value or 0.0


def test_every_lost_span_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    backend = BlockedExporter()
    holder: list[Telemetry] = []
    processor = CountingBatchSpanProcessor(
        backend,
        lambda reason, n: holder[0].count_dropped_spans(reason, n),
        max_queue_size=100,
        max_export_batch_size=10,
        schedule_delay_millis=1,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    telemetry = Telemetry(tracer_provider=provider, registry=registry)
    holder.append(telemetry)
    tracer = telemetry.tracer
    with caplog.at_level(logging.WARNING):
        for i in range(1000):
            tracer.start_span(f"s{i}").end()
    assert not [r for r in caplog.records if "Queue full" in r.getMessage()]
    assert dropped(registry, "queue_full") >= 1000 - 100 - 10
    backend.release.set()
    processor.shutdown_within(5000)
    total = sum(dropped(registry, r) for r in ("queue_full", "export_failed", "shutdown"))
    assert total == 1000  # nothing reached the backend, and every span is accounted for
    tracer.start_span("late").end()
    assert dropped(registry, "shutdown") >= 1
