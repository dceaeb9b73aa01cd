"""``Telemetry``: the factory that names every operation, over the ``Recorder`` they use.

Everything that records goes through one ``Telemetry`` object. Tests build their own
with an in-memory exporter and a fresh registry; a service gets one from
``setup_telemetry()``. It never sets globals itself.

The operation modules depend on ``Recorder`` (tracer, catalog, clock, labels) only;
this module sits above them and imports them, never the other way round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.util.types import AttributeValue
from prometheus_client import CollectorRegistry

from ._agent_run import AgentRunInvocation, AgentRunMeter
from ._batch_task import BatchMeter, BatchTaskInvocation, QueueMeter
from ._invocation import Clock
from ._llm_call import LlmCallInvocation
from ._operation import Observation, OperationInvocation
from ._rate_limit import RateLimitMeter
from ._recorder import Recorder
from ._retry_attempt import RetryAttemptInvocation, RetryMeter
from ._tool_call import ToolCallInvocation
from .catalog import MetricCatalog
from .prices import PriceTable
from .settings import DEFAULT_SHUTDOWN_TIMEOUT, ContentCapture


class Telemetry(Recorder):
    """What records: spans through ``tracer``, samples into ``metrics``.

    One factory per operation (``agent_run``, ``llm_call``, ``tool_call``,
    ``batch_task``, ``retry_attempt``, ``observe`` / ``start_operation``), and each
    operation's metrics outside a span: ``agent_runs``, ``batches``, ``retries``, ``queue``
    (the batch queue on Redis).
    """

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
        prices: PriceTable | None = None,
    ) -> None:
        super().__init__(
            tracer_provider=tracer_provider,
            registry=registry,
            clock=clock,
            capture_content=capture_content,
            catalog=catalog,
            prices=prices,
        )
        self._on_shutdown = on_shutdown
        self.shutdown_timeout = shutdown_timeout
        self.tracer_provider: trace.TracerProvider | None = tracer_provider
        # False when no exporter sends spans anywhere (setup's export policy): a trace id
        # would name a trace no backend has, so runs report none.
        self.exports_spans = exports_spans
        self.agent_runs = AgentRunMeter(self)
        self.batches = BatchMeter(self)
        self.queue = QueueMeter(self)
        self.retries = RetryMeter(self)
        self.rate_limits = RateLimitMeter(self)

    def count_dropped_spans(self, reason: str, count: int) -> None:
        self.metrics.spans_dropped.labels(reason).inc(count)

    # -- observe() -------------------------------------------------------------------
    def observe(self, operation: str, **attributes: AttributeValue) -> Observation:
        """Time ``operation``: ``async with``, or a decorator for async functions/generators."""
        return Observation(operation, attributes, self.start_operation)

    def start_operation(
        self, operation: str, attributes: Mapping[str, AttributeValue] | None = None
    ) -> OperationInvocation:
        return OperationInvocation(self, operation, attributes)

    # -- the operation factories ---------------------------------------------------
    def agent_run(
        self,
        agent_name: str,
        request_model: str,
        *,
        conversation_id: str | None = None,
        parent: Context | None = None,
        start_time_ns: int | None = None,
        started_at: float | None = None,
        budget_usd: float | None = None,
    ) -> AgentRunInvocation:
        """An ``invoke_agent {agent_name}`` span and its duration histogram
        (``start_time_ns`` / ``started_at``: a run recognised after it started); its
        ``spend`` sums its calls' cost (``budget_usd``: the run's budget, for the
        runtime to enforce)."""
        return AgentRunInvocation(
            self,
            agent_name,
            request_model,
            conversation_id=conversation_id,
            parent=parent,
            start_time_ns=start_time_ns,
            started_at=started_at,
            budget_usd=budget_usd,
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

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush queued spans and stop exporting, within ``timeout`` seconds (default:
        ``shutdown_timeout``, AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT). When it returns,
        ``agentwatch_telemetry_spans_dropped_total`` counts every span that was lost."""
        if self._on_shutdown is not None:
            self._on_shutdown(self.shutdown_timeout if timeout is None else timeout)
