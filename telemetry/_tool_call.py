"""``execute_tool {name}``: one tool call."""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from . import names as n
from ._invocation import Exemplar, Invocation
from ._recorder import Recorder

OPERATION = n.OP_EXECUTE_TOOL


class ToolCallInvocation(Invocation):
    __slots__ = ("_agent", "_recorder", "_tool")

    def __init__(
        self,
        recorder: Recorder,
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
            recorder.tracer,
            recorder.clock,
            f"{OPERATION} {tool_name}",
            attributes,
            kind=SpanKind.INTERNAL,
            parent=parent,
        )
        self._recorder = recorder
        self._tool = recorder.tools(tool_name)
        self._agent = recorder.agents(agent_name) if agent_name else ""

    def capture(self, arguments: str | None = None, result: str | None = None) -> None:
        """Arguments and result on the span, only when content capture is opted in."""
        if not self._recorder.capturing or not self.span.is_recording():
            return
        if arguments is not None:
            self.span.set_attribute(n.GEN_AI_TOOL_CALL_ARGUMENTS, arguments)
        if result is not None:
            self.span.set_attribute(n.GEN_AI_TOOL_CALL_RESULT, result)

    def _record(self, duration: float, error_type: str, exemplar: Exemplar) -> None:
        r = self._recorder
        r.child(
            r.metrics.gen_ai_execute_tool_duration,
            self._tool,
            self._agent,
            r.error_label(error_type),
        ).observe(duration, exemplar)
