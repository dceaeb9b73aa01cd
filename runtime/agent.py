"""``Agent``: a LangChain 1.x agent (``create_agent``) whose runs are fully observed.

``await agent.arun(query)`` is one ``invoke_agent {name}`` span (its own trace unless a
parent context is given) with the model's ``chat`` spans and the tools'
``execute_tool`` spans beneath it, and returns the answer with its tool calls, token
usage and trace id. Runs are independent: many can run at once with ``asyncio.gather``.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from opentelemetry.context import Context

from agentwatch.telemetry import AgentwatchError, Telemetry

from .lc_tools import langchain_tools
from .tools.registry import ToolRegistry

DEFAULT_AGENT_NAME: Final = "research_agent"
DEFAULT_SYSTEM_PROMPT: Final = (
    "You are a research assistant. Use the calculator for any arithmetic and the search "
    "tool for questions about the documentation. Answer briefly."
)
RECURSION_LIMIT: Final = 16


class AgentInputError(AgentwatchError, ValueError):
    """The query cannot be run: empty, not text, or too long."""


class AgentRunError(AgentwatchError):
    """The run did not produce an answer (model error, timeout, step limit)."""


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

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class RunResult:
    output: str
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    trace_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "tool_calls": [asdict(c) for c in self.tool_calls],
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
                "total_tokens": self.usage.total_tokens,
            },
            "trace_id": self.trace_id,
        }


class Agent:
    def __init__(
        self,
        model: BaseChatModel,
        tools: ToolRegistry,
        *,
        telemetry: Telemetry,
        model_name: str,
        name: str = DEFAULT_AGENT_NAME,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        run_timeout: float = 120.0,
        max_input_chars: int = 32_000,
    ) -> None:
        self.name = name
        self.model_name = model_name
        self.telemetry = telemetry
        self.tools = tools
        self.run_timeout = run_timeout
        self.max_input_chars = max_input_chars
        telemetry.agents.allow([name])
        telemetry.models.allow([model_name])
        self.graph = create_agent(
            model, langchain_tools(tools, telemetry, name), system_prompt=system_prompt, name=name
        )

    def check_input(self, query: object) -> str:
        if not isinstance(query, str):
            raise AgentInputError("the query must be text")
        if not query.strip():
            raise AgentInputError("the query is empty")
        if len(query) > self.max_input_chars:
            raise AgentInputError(
                f"the query is {len(query)} characters; the limit is {self.max_input_chars}"
            )
        return query

    async def arun(
        self, query: str, *, parent: Context | None = None, conversation_id: str | None = None
    ) -> RunResult:
        """Run one query to its final answer, as one ``invoke_agent`` span."""
        query = self.check_input(query)
        invocation = self.telemetry.agent_run(
            self.name, self.model_name, conversation_id=conversation_id, parent=parent
        )
        invocation.activate()
        try:
            async with asyncio.timeout(self.run_timeout):
                state = await self.graph.ainvoke(
                    {"messages": [{"role": "user", "content": query}]},
                    {"recursion_limit": RECURSION_LIMIT},
                )
        except BaseException as exc:
            invocation.deactivate()
            invocation.end(exc)
            if isinstance(exc, TimeoutError):
                raise AgentRunError(f"the run took longer than {self.run_timeout:g} s") from exc
            raise
        invocation.deactivate()
        result = result_from_messages(state["messages"], invocation.trace_id)
        invocation.stop()
        return result


def result_from_messages(messages: list[BaseMessage], trace_id: str) -> RunResult:
    """Answer, tool calls and summed usage of a finished run's messages."""
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
    return RunResult(output, calls, Usage(input_tokens, output_tokens), trace_id)
