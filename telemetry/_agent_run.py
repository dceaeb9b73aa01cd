"""``invoke_agent {name}``: one agent run, from query to final answer.

A run that never got a run slot (shed by admission control) has no span; it is counted
by ``AgentRunMeter.shed`` in ``agentwatch_admission_shed_total{reason}``.
"""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from . import names as n
from ._invocation import Exemplar, Invocation
from ._recorder import Recorder
from ._spend import Spend, current_spend, with_spend

OPERATION = n.OP_INVOKE_AGENT


class AgentRunInvocation(Invocation):
    """An agent run. Its ``spend`` sums what the chat calls beneath it cost (they find it
    in the context this invocation makes current, or in ``context``); the total goes on
    the span and into ``agentwatch_run_cost_usd`` when the run ends."""

    __slots__ = ("_agent", "_model", "_recorder", "spend")

    def __init__(
        self,
        recorder: Recorder,
        agent_name: str,
        request_model: str,
        *,
        conversation_id: str | None = None,
        parent: Context | None = None,
        start_time_ns: int | None = None,
        started_at: float | None = None,
        budget_usd: float | None = None,
    ) -> None:
        attributes: dict[str, str | float] = {
            n.GEN_AI_OPERATION_NAME: OPERATION,
            n.GEN_AI_AGENT_NAME: agent_name,
        }
        if request_model:
            attributes[n.GEN_AI_REQUEST_MODEL] = request_model
        if conversation_id:
            attributes[n.GEN_AI_CONVERSATION_ID] = conversation_id
        if budget_usd is not None:
            attributes[n.AGENTWATCH_RUN_BUDGET] = budget_usd
        super().__init__(
            recorder.tracer,
            recorder.clock,
            f"{OPERATION} {agent_name}" if agent_name else OPERATION,
            attributes,
            kind=SpanKind.INTERNAL,
            parent=parent,
            start_time_ns=start_time_ns,
            started_at=started_at,
        )
        self._recorder = recorder
        self._agent = recorder.agents(agent_name)
        self._model = recorder.models(request_model)
        self.spend = Spend(agent=self._agent, budget_usd=budget_usd, parent=current_spend(parent))

    def _context(self) -> Context:
        return with_spend(self.spend, super()._context())

    def set_request_model(self, request_model: str) -> None:
        """The run's model, when it was not known at its start (the first model call
        beneath it): on the span, and the metric's label when the run ends."""
        self._model = self._recorder.models(request_model)
        if request_model and self.span.is_recording():
            self.span.set_attribute(n.GEN_AI_REQUEST_MODEL, request_model)

    def _record(self, duration: float, error_type: str, exemplar: Exemplar) -> None:
        r = self._recorder
        r.child(
            r.metrics.gen_ai_invoke_agent_duration,
            self._agent,
            self._model,
            r.error_label(error_type),
        ).observe(duration, exemplar)
        spend = self.spend
        if not spend.priced_calls:
            return  # no call priced: no cost to tell (an unknown price is not 0)
        r.child(r.metrics.run_cost, self._agent, self._model).observe(spend.cost_usd, exemplar)
        if self.span.is_recording():
            self.span.set_attribute(n.AGENTWATCH_RUN_COST_AMOUNT, spend.cost_usd)


class AgentRunMeter:
    """What agent runs record outside a run's span: ``telemetry.agent_runs``."""

    __slots__ = ("_recorder",)

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def shed(self, reason: str) -> None:
        """A run that ended before it got a run slot: one of ``n.ADMISSION_SHED_REASONS``."""
        r = self._recorder
        r.child(r.metrics.admission_shed, reason).inc()

    def admitted(self, waited: float) -> None:
        """A run got its slot after waiting ``waited`` seconds (0: at once)."""
        metrics = self._recorder.metrics
        metrics.admission_in_flight.inc()
        metrics.admission_wait.observe(waited)

    def released(self) -> None:
        """A run gave its slot back."""
        self._recorder.metrics.admission_in_flight.dec()

    def waiting(self, change: int) -> None:
        """Runs started (+1) or stopped (-1) waiting for a slot."""
        self._recorder.metrics.admission_waiting.inc(change)

    def limit(self, limit: int | None) -> None:
        """The admission limit now (None: no limit, shown as 0)."""
        self._recorder.metrics.admission_limit.set(limit or 0)
