"""``Recorder``: what every operation records with, and nothing that names an operation.

The tracer, the metric catalog, the clock, the price table, the closed label sets and
the cache of bound label children. The operation modules (``_agent_run``, ``_llm_call``, ...) take a
``Recorder``; ``Telemetry`` (core.py), the factory that names them, is one.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar, cast

from opentelemetry import trace
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from ._invocation import Clock
from .catalog import MetricCatalog
from .labels import BoundedLabel
from .prices import PriceTable
from .settings import ContentCapture

M = TypeVar("M", bound=MetricWrapperBase)

INSTRUMENTATION_NAME = "agentwatch"


class Recorder:
    """Spans through ``tracer``, samples into ``metrics``, label values from closed sets."""

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        registry: CollectorRegistry | None = None,
        clock: Clock = time.perf_counter,
        capture_content: ContentCapture = "none",
        catalog: MetricCatalog | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self.tracer = provider.get_tracer(INSTRUMENTATION_NAME)
        # A catalog is registered once per registry; pass one to share it.
        self.metrics = catalog if catalog is not None else MetricCatalog.create(registry)
        self.clock = clock
        self.capture_content = capture_content
        # What model calls cost: the bundled table, or the one built from the settings
        # (the user's AGENTWATCH_PRICES_FILE over it).
        self.prices = prices if prices is not None else PriceTable()
        # Closed label sets, one per label. The runtime declares what it registers
        # (agents, models, tools): declared names always pass; any other value is
        # admitted while there is room (the first `limit`), the rest become _OTHER.
        # Declaring only adds, so the order of calls never changes a label.
        self.operations = BoundedLabel()
        self.error_types = BoundedLabel()
        self.agents = BoundedLabel(limit=16)
        self.models = BoundedLabel(limit=16)
        self.providers = BoundedLabel(limit=8)
        self.tools = BoundedLabel(limit=64)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    @property
    def capturing(self) -> bool:
        """Whether message content goes on spans (opt-in): check before serializing it."""
        return self.capture_content != "none"

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    def child(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, bound once per label set and reused.

        Callers pass values already mapped onto their closed sets, so the cache is
        bounded by the product of those sets.
        """
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return cast(M, child)

    def error_label(self, error_type: str) -> str:
        return self.error_types(error_type) if error_type else ""
