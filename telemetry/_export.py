"""Span export that never blocks the hot path and counts what it loses.

The SDK's BatchSpanProcessor builds a "Queue full, dropping Span" log record for every
span it drops, which made the hot path ~19% slower with the backend down (measured,
see docs/architecture.md). ``CountingBatchSpanProcessor`` checks for room first and
counts a drop with one counter increment instead; ``CountingExporter`` counts the spans
of every batch the backend did not accept.

The count is final when ``shutdown_within`` returns: it stops the exporter's retries,
waits (briefly) for the batch being sent to come back and be counted, and counts what
is still queued. A batch still on the wire after that is counted as dropped at once, and
its late result is ignored, so the counter never moves after shutdown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence, Sized

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from .catalog import SPAN_DROP_REASONS

DropCallback = Callable[[str, int], None]

REASON_QUEUE_FULL, REASON_EXPORT_FAILED, REASON_SHUTDOWN = SPAN_DROP_REASONS

# At most this long (and at most a fifth of the shutdown timeout) is kept back from the
# flush for the last batch's result to be counted.
_COUNT_RESERVE = 0.5


class CountingExporter(SpanExporter):
    """Delegates to ``inner``; the spans of a failed export are reported as dropped."""

    def __init__(self, inner: SpanExporter, on_drop: DropCallback) -> None:
        self._inner = inner
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._in_flight = 0  # spans handed to the backend, result not known yet
        self._sealed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        count = len(spans)
        with self._lock:
            if self._sealed:  # after shutdown: counted here, never sent
                self._on_drop(REASON_SHUTDOWN, count)
                return SpanExportResult.FAILURE
            self._in_flight += count
        try:
            result = self._inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        with self._lock:
            self._in_flight -= count
            if result is not SpanExportResult.SUCCESS and not self._sealed:
                self._on_drop(REASON_EXPORT_FAILED, count)
        return result

    def seal(self) -> None:
        """Make the count final: spans still being sent are counted as dropped now, and
        what their export returns later is ignored."""
        with self._lock:
            if not self._sealed:
                self._sealed = True
                if self._in_flight:
                    self._on_drop(REASON_SHUTDOWN, self._in_flight)

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
        self._counting = CountingExporter(exporter, on_drop)
        super().__init__(
            self._counting,
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
        """Flush what is queued and stop, within about ``timeout_millis``. When it returns
        every span this processor took is either exported or counted as dropped."""
        if self._closed:
            return
        self._closed = True  # from now on a span that ends is counted, not queued
        deadline = time.monotonic() + timeout_millis / 1000
        # Most of the time flushes; the rest is for the batch being sent when the flush
        # gives up (the exporter's shutdown ends its retry wait) to come back, counted.
        reserve = min(_COUNT_RESERVE, timeout_millis / 1000 / 5)
        self._batch_processor.shutdown(timeout_millis=int(timeout_millis - reserve * 1000))
        worker: threading.Thread | None = getattr(self._batch_processor, "_worker_thread", None)
        if worker is not None:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._counting.seal()
        left = len(self._queue)  # never exported once the deadline passed: count them
        clear = getattr(self._queue, "clear", None)
        if left and clear is not None:
            clear()
            self._on_drop(REASON_SHUTDOWN, left)

    def shutdown(self) -> None:
        self.shutdown_within(30_000)  # the SDK's own default
