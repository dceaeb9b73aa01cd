"""Span export counts every span it loses, by reason, without a log record per span."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from agentwatch.telemetry import Telemetry, build_telemetry
from agentwatch.telemetry._export import CountingBatchSpanProcessor
from tests.helpers import free_port, time_bound


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


def counted(
    backend: SpanExporter, registry: CollectorRegistry
) -> tuple[Telemetry, CountingBatchSpanProcessor]:
    """Telemetry whose spans go to ``backend`` through a small counting processor."""
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
    holder.append(Telemetry(tracer_provider=provider, registry=registry))
    return holder[0], processor


def test_every_lost_span_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    backend = BlockedExporter()
    telemetry, processor = counted(backend, registry)
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


def total_dropped(registry: CollectorRegistry) -> float:
    return sum(dropped(registry, r) for r in ("queue_full", "export_failed", "shutdown"))


def spans_to_a_closed_port(
    monkeypatch: pytest.MonkeyPatch, n: int, **env: str
) -> tuple[Telemetry, CollectorRegistry]:
    """A real OTLP/HTTP exporter whose backend is down, with ``n`` spans ended."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "10")  # retries outlast the shutdown
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    registry = CollectorRegistry()
    telemetry = build_telemetry(registry=registry)
    for i in range(n):
        telemetry.tracer.start_span(f"s{i}").end()
    return telemetry, registry


def test_the_drop_count_is_final_when_shutdown_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    telemetry, registry = spans_to_a_closed_port(monkeypatch, 160)
    telemetry.shutdown(1.0)  # the exporter is still retrying its batch when this ends
    assert total_dropped(registry) == 160  # dropped + exported (none) == every span


def test_shutdown_without_an_argument_uses_the_configured_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    telemetry, registry = spans_to_a_closed_port(
        monkeypatch, 50, AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT="0.5"
    )
    start = time.monotonic()
    telemetry.shutdown()
    elapsed = time.monotonic() - start
    # 0.5 s asked; 5 s when the setting was ignored
    assert elapsed < time_bound(strict=1.5, generous=4.5), elapsed
    assert total_dropped(registry) == 50


class StuckExporter(SpanExporter):
    """A backend whose request hangs, deaf to shutdown, until the test lets it go."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.returned = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(30)
        self.returned.set()
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass


def test_a_batch_still_on_the_wire_at_the_deadline_is_counted_once() -> None:
    registry = CollectorRegistry()
    backend = StuckExporter()
    telemetry, processor = counted(backend, registry)
    for i in range(40):
        telemetry.tracer.start_span(f"s{i}").end()
    assert backend.entered.wait(10)
    processor.shutdown_within(300)
    assert total_dropped(registry) == 40  # the stuck batch and the queued ones
    backend.release.set()
    assert backend.returned.wait(10)
    processor._batch_processor._worker_thread.join(10)  # the late result has come back
    assert total_dropped(registry) == 40  # and was not counted a second time
