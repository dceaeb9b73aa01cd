"""``Telemetry``: the tracer, the metric catalog and the clock, injected once.

Everything that records goes through one ``Telemetry`` object. Tests build their own
with an in-memory exporter and a fresh registry; a service gets one from
``setup_telemetry()``. It never sets globals itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue
from prometheus_client import CollectorRegistry

from ._invocation import Clock, Exemplar, Invocation
from .catalog import MetricCatalog
from .labels import BoundedLabel
from .settings import ContentCapture

if TYPE_CHECKING:
    from prometheus_client.metrics import Histogram

    from .observe import Observation

INSTRUMENTATION_NAME = "agentwatch"

_Observer = Callable[..., None]


class Telemetry:
    """What records: spans through ``tracer``, samples into ``metrics``."""

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        registry: CollectorRegistry | None = None,
        clock: Clock = time.perf_counter,
        capture_content: ContentCapture = "none",
        on_shutdown: Callable[[float], None] | None = None,
    ) -> None:
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self.tracer = provider.get_tracer(INSTRUMENTATION_NAME)
        self.metrics = MetricCatalog.create(registry)
        self.clock = clock
        self.capture_content = capture_content
        self.operations = BoundedLabel()
        self.error_types = BoundedLabel()
        self._on_shutdown = on_shutdown
        self.tracer_provider: trace.TracerProvider | None = tracer_provider
        self._operation_children: dict[tuple[str, str], Histogram] = {}

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    def count_dropped_spans(self, reason: str, count: int) -> None:
        self.metrics.spans_dropped.labels(reason).inc(count)

    # -- observe() -------------------------------------------------------------------
    def observe(self, operation: str, **attributes: AttributeValue) -> Observation:
        """Time ``operation``: ``async with``, or a decorator for async functions/generators."""
        from .observe import Observation

        return Observation(operation, attributes, self)

    def start_operation(
        self, operation: str, attributes: Mapping[str, AttributeValue] | None = None
    ) -> OperationInvocation:
        return OperationInvocation(self, operation, attributes)

    def operation_histogram(self, operation: str, error_type: str) -> Histogram:
        key = (operation, error_type)
        child = self._operation_children.get(key)
        if child is None:
            bounded = (
                self.operations(operation),
                self.error_types(error_type) if error_type else "",
            )
            child = self.metrics.operation_duration.labels(*bounded)
            if len(self._operation_children) < 4096:
                self._operation_children[key] = child
        return child

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush queued spans and stop exporting; returns within ``timeout`` seconds."""
        if self._on_shutdown is not None:
            self._on_shutdown(5.0 if timeout is None else timeout)


class OperationInvocation(Invocation):
    """An operation under ``observe()``: records ``agentwatch_operation_duration_seconds``."""

    __slots__ = ("_operation", "_telemetry")

    def __init__(
        self,
        telemetry: Telemetry,
        operation: str,
        attributes: Mapping[str, AttributeValue] | None,
    ) -> None:
        super().__init__(telemetry.tracer, telemetry.clock, operation, attributes)
        self._telemetry = telemetry
        self._operation = operation

    def _record(self, duration: float, error_type: str, exemplar: Exemplar) -> None:
        self._telemetry.operation_histogram(self._operation, error_type).observe(duration, exemplar)
