"""What a run returns: the answer, its tool calls, token usage and trace id.

``trace_id`` is the run's trace in the tracing backend, or "" when no backend will ever
have it: tracing off, the trace not sampled (``sampled`` False), or spans exported
nowhere (no exporter: ``OTEL_TRACES_EXPORTER=none``, or neither it nor an OTLP endpoint
set; ``sampled`` True). It stays a string, as before, so clients that read it need no
change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    id: str
    name: str
    arguments: dict[str, Any]
    result: str
    error: bool


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    """What the run's model calls cost, USD, from the offline price table (telemetry's
    ``PriceTable``); None when no call could be priced (an unknown price is not 0)."""
    unpriced_calls: int = 0
    """The run's model calls that could not be priced: with some priced, ``cost_usd`` is
    partial."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class RunResult:
    output: str
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    trace_id: str = ""
    sampled: bool = False
    """Whether the run's trace was sampled: False means no backend has it, and
    ``trace_id`` is "". True with ``trace_id`` "": sampled, but spans are exported
    nowhere."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "tool_calls": [asdict(c) for c in self.tool_calls],
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
                "total_tokens": self.usage.total_tokens,
                "cost_usd": self.usage.cost_usd,
                "unpriced_calls": self.usage.unpriced_calls,
            },
            "trace_id": self.trace_id,
            "sampled": self.sampled,
        }


def result_from_messages(
    messages: list[BaseMessage],
    trace_id: str,
    sampled: bool | None = None,
    cost_usd: float | None = None,
    unpriced_calls: int = 0,
) -> RunResult:
    """Answer, tool calls and summed usage of a finished run's messages; ``cost_usd``:
    what its calls cost (the run's ``Spend``, which priced each call once).

    ``sampled`` None: sampled exactly when there is a trace id."""
    results = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    calls: list[ToolCallRecord] = []
    input_tokens = output_tokens = 0
    output = ""
    for message in messages:
        if not isinstance(message, AIMessage):
            continue
        if message.usage_metadata:
            input_tokens += message.usage_metadata.get("input_tokens", 0)
            output_tokens += message.usage_metadata.get("output_tokens", 0)
        for call in message.tool_calls:
            answer = results.get(call.get("id") or "")
            calls.append(
                ToolCallRecord(
                    id=call.get("id") or "",
                    name=call["name"],
                    arguments=dict(call.get("args") or {}),
                    result=answer.text if answer is not None else "",
                    error=answer is not None and answer.status == "error",
                )
            )
        if not message.tool_calls:
            output = message.text
    sampled = bool(trace_id) if sampled is None else sampled
    usage = Usage(input_tokens, output_tokens, cost_usd, unpriced_calls)
    return RunResult(output, calls, usage, trace_id, sampled)


def usage_line(usage: Usage) -> str:
    """What a person is told of a run's usage: its tokens and what they cost."""
    cost = "unpriced" if usage.cost_usd is None else f"${usage.cost_usd:.6f}"
    if usage.cost_usd is not None and usage.unpriced_calls:
        cost += f" (partial: {usage.unpriced_calls} call(s) unpriced)"
    return f"tokens: {usage.input_tokens} in, {usage.output_tokens} out  cost: {cost}"


def trace_line(result: RunResult) -> str:
    """What a person is told of a run's trace: its id, or why no backend has it."""
    if result.trace_id:
        return f"trace_id: {result.trace_id}"
    return "trace not exported" if result.sampled else "trace not sampled"
