"""``Telemetry``: the tracer, the metric catalog and the clock, injected once.

Everything that records goes through one ``Telemetry`` object. Tests build their own
with an in-memory exporter and a fresh registry; a service gets one from
``setup_telemetry()``. It never sets globals itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from ._invocation import Clock, Exemplar, Invocation
from .catalog import MetricCatalog
from .labels import BoundedLabel
from .settings import DEFAULT_SHUTDOWN_TIMEOUT, ContentCapture

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from prometheus_client.metrics import Histogram

    from .observe import Observation

M = TypeVar("M", bound=MetricWrapperBase)

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
        catalog: MetricCatalog | None = None,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        exports_spans: bool = True,
    ) -> None:
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self.tracer = provider.get_tracer(INSTRUMENTATION_NAME)
        # A catalog is registered once per registry; pass one to share it.
        self.metrics = catalog if catalog is not None else MetricCatalog.create(registry)
        self.clock = clock
        self.capture_content = capture_content
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
        self._on_shutdown = on_shutdown
        self.shutdown_timeout = shutdown_timeout
        self.tracer_provider: trace.TracerProvider | None = tracer_provider
        # False when no exporter sends spans anywhere (setup's export policy): a trace id
        # would name a trace no backend has, so runs report none.
        self.exports_spans = exports_spans
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    @property
    def capturing(self) -> bool:
        """Whether message content goes on spans (opt-in): check before serializing it."""
        return self.capture_content != "none"

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

    def operation_histogram(self, operation: str, error_type: str) -> Histogram:
        return self.child(
            self.metrics.operation_duration,
            self.operations(operation),
            self.error_label(error_type),
        )

    # -- the operation factories ---------------------------------------------------
    def agent_run(
        self,
        agent_name: str,
        request_model: str,
        *,
        conversation_id: str | None = None,
        parent: Context | None = None,
    ) -> AgentRunInvocation:
        """An ``invoke_agent {agent_name}`` span and its duration histogram."""
        return AgentRunInvocation(
            self, agent_name, request_model, conversation_id=conversation_id, parent=parent
        )

    def llm_call(
        self,
        request_model: str,
        provider: str,
        *,
        stream: bool = False,
        parent: Context | None = None,
    ) -> LlmCallInvocation:
        """A ``chat {model}`` span, duration, token usage and (streams) chunk timing."""
        return LlmCallInvocation(self, request_model, provider, stream=stream, parent=parent)

    def tool_call(
        self,
        tool_name: str,
        *,
        agent_name: str = "",
        call_id: str | None = None,
        parent: Context | None = None,
    ) -> ToolCallInvocation:
        """An ``execute_tool {tool_name}`` span and its duration histogram."""
        return ToolCallInvocation(
            self, tool_name, agent_name=agent_name, call_id=call_id, parent=parent
        )

    def retry_attempt(
        self,
        operation: str,
        attempt: int,
        wait_before: float,
        *,
        parent: Context | None = None,
        start_time_ns: int | None = None,
        started_at: float | None = None,
    ) -> RetryAttemptInvocation:
        """A ``retry_attempt {operation}`` span for one attempt of a retried call."""
        return RetryAttemptInvocation(
            self,
            operation,
            attempt,
            wait_before,
            parent=parent,
            start_time_ns=start_time_ns,
            started_at=started_at,
        )

    def batch_task(
        self,
        batch_id: str,
        task_id: str,
        priority: int,
        queue_wait: float,
        *,
        parent: Context | None = None,
    ) -> BatchTaskInvocation:
        """A ``batch_task`` span; records the queue wait now and the outcome at the end."""
        return BatchTaskInvocation(self, batch_id, task_id, priority, queue_wait, parent=parent)

    def count_unstarted_batch_tasks(self, status: str, count: int = 1) -> None:
        """Batch tasks that ended (cancelled) before a worker started them: no span."""
        count_unstarted(self, status, count)

    def count_retry(self, operation: str, outcome: str, wait: float | None = None) -> None:
        """``agentwatch_retry_attempts_total`` (and, before a retry, the backoff wait)."""
        op = self.operations(operation)
        self.child(self.metrics.retry_attempts, op, outcome).inc()
        if wait is not None:
            self.child(self.metrics.retry_backoff, op).observe(wait)

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush queued spans and stop exporting, within ``timeout`` seconds (default:
        ``shutdown_timeout``, AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT). When it returns,
        ``agentwatch_telemetry_spans_dropped_total`` counts every span that was lost."""
        if self._on_shutdown is not None:
            self._on_shutdown(self.shutdown_timeout if timeout is None else timeout)


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


# The operation modules import Telemetry for typing only; bound here, after it exists.
from ._agent_run import AgentRunInvocation  # noqa: E402
from ._batch_task import BatchTaskInvocation, count_unstarted  # noqa: E402
from ._llm_call import LlmCallInvocation  # noqa: E402
from ._retry_attempt import RetryAttemptInvocation  # noqa: E402
from ._tool_call import ToolCallInvocation  # noqa: E402
