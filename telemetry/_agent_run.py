"""``invoke_agent {name}``: one agent run, from query to final answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from . import names as n
from ._invocation import Exemplar, Invocation

if TYPE_CHECKING:
    from .core import Telemetry

OPERATION = "invoke_agent"


class AgentRunInvocation(Invocation):
    __slots__ = ("_agent", "_model", "_telemetry")

    def __init__(
        self,
        telemetry: Telemetry,
        agent_name: str,
        request_model: str,
        *,
        conversation_id: str | None = None,
        parent: Context | None = None,
    ) -> None:
        attributes: dict[str, str] = {
            n.GEN_AI_OPERATION_NAME: OPERATION,
            n.GEN_AI_AGENT_NAME: agent_name,
            n.GEN_AI_REQUEST_MODEL: request_model,
        }
        if conversation_id:
            attributes[n.GEN_AI_CONVERSATION_ID] = conversation_id
        super().__init__(
            telemetry.tracer,
            telemetry.clock,
            f"{OPERATION} {agent_name}",
            attributes,
            kind=SpanKind.INTERNAL,
            parent=parent,
        )
        self._telemetry = telemetry
        self._agent = telemetry.agents(agent_name)
        self._model = telemetry.models(request_model)

    def _record(self, duration: float, error_type: str, exemplar: Exemplar) -> None:
        t = self._telemetry
        t.child(
            t.metrics.gen_ai_invoke_agent_duration,
            self._agent,
            self._model,
            t.error_label(error_type),
        ).observe(duration, exemplar)
