"""``execute_tool {name}``: one tool call."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from . import names as n
from ._invocation import Exemplar, Invocation

if TYPE_CHECKING:
    from .core import Telemetry

OPERATION = n.OP_EXECUTE_TOOL


class ToolCallInvocation(Invocation):
    __slots__ = ("_agent", "_telemetry", "_tool")

    def __init__(
        self,
        telemetry: Telemetry,
        tool_name: str,
        *,
        agent_name: str = "",
        call_id: str | None = None,
        parent: Context | None = None,
    ) -> None:
        attributes: dict[str, str] = {
            n.GEN_AI_OPERATION_NAME: OPERATION,
            n.GEN_AI_TOOL_NAME: tool_name,
            n.GEN_AI_TOOL_TYPE: "function",
        }
        if call_id:
            attributes[n.GEN_AI_TOOL_CALL_ID] = call_id
        super().__init__(
            telemetry.tracer,
            telemetry.clock,
            f"{OPERATION} {tool_name}",
            attributes,
            kind=SpanKind.INTERNAL,
            parent=parent,
        )
        self._telemetry = telemetry
        self._tool = telemetry.tools(tool_name)
        self._agent = telemetry.agents(agent_name) if agent_name else ""

    def capture(self, arguments: str | None = None, result: str | None = None) -> None:
        """Arguments and result on the span, only when content capture is opted in."""
        if self._telemetry.capture_content == "none" or not self.span.is_recording():
            return
        if arguments is not None:
            self.span.set_attribute(n.GEN_AI_TOOL_CALL_ARGUMENTS, arguments)
        if result is not None:
            self.span.set_attribute(n.GEN_AI_TOOL_CALL_RESULT, result)

    def _record(self, duration: float, error_type: str, exemplar: Exemplar) -> None:
        t = self._telemetry
        t.child(
            t.metrics.gen_ai_execute_tool_duration,
            self._tool,
            self._agent,
            t.error_label(error_type),
        ).observe(duration, exemplar)
