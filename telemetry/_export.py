"""Span export that never blocks the hot path and counts what it loses.

The SDK's BatchSpanProcessor builds a "Queue full, dropping Span" log record for every
span it drops, which made the hot path ~19% slower with the backend down (measured,
see docs/architecture.md). ``CountingBatchSpanProcessor`` checks for room first and
counts a drop with one counter increment instead; ``CountingExporter`` counts the spans
of every batch the backend did not accept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Sized

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from .catalog import SPAN_DROP_REASONS

DropCallback = Callable[[str, int], None]

REASON_QUEUE_FULL, REASON_EXPORT_FAILED, REASON_SHUTDOWN = SPAN_DROP_REASONS


class CountingExporter(SpanExporter):
    """Delegates to ``inner``; the spans of a failed export are reported as dropped."""

    def __init__(self, inner: SpanExporter, on_drop: DropCallback) -> None:
        self._inner = inner
        self._on_drop = on_drop

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:
            self._on_drop(REASON_EXPORT_FAILED, len(spans))
            return SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._on_drop(REASON_EXPORT_FAILED, len(spans))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """A bounded BatchSpanProcessor that drops the newest span, uncounted by the logger."""

    def __init__(
        self,
        exporter: SpanExporter,
        on_drop: DropCallback,
        *,
        max_queue_size: int | None = None,
        schedule_delay_millis: float | None = None,
        max_export_batch_size: int | None = None,
    ) -> None:
        super().__init__(
            CountingExporter(exporter, on_drop),
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=max_export_batch_size,
        )
        self._on_drop = on_drop
        # The SDK's bounded deque, read to drop before it logs (a private attribute:
        # without it, fall back to the SDK's own dropping, still counted on export).
        inner = self._batch_processor
        self._queue: Sized = getattr(inner, "_queue", ())
        self._capacity: float = getattr(inner, "_max_queue_size", float("inf"))
        self._closed = False

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        if self._closed:
            self._on_drop(REASON_SHUTDOWN, 1)
        elif len(self._queue) >= self._capacity:
            self._on_drop(REASON_QUEUE_FULL, 1)
        else:
            self._batch_processor.emit(span)

    def shutdown_within(self, timeout_millis: int) -> None:
        """Flush what is queued and stop, giving up after ``timeout_millis``."""
        self._closed = True
        self._batch_processor.shutdown(timeout_millis=timeout_millis)
        left = len(self._queue)  # never exported once the deadline passed: count them
        clear = getattr(self._queue, "clear", None)
        if left and clear is not None:
            clear()
            self._on_drop(REASON_SHUTDOWN, left)

    def shutdown(self) -> None:
        self._closed = True
        super().shutdown()  # type: ignore[no-untyped-call]
