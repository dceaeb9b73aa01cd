"""``Agent``: a LangChain 1.x agent (``create_agent``) whose runs are fully observed.

``await agent.arun(query)`` is one ``invoke_agent {name}`` span (its own trace unless a
parent context is given) with the model's ``chat`` spans and the tools'
``execute_tool`` spans beneath it, and returns the answer with its tool calls, token
usage and trace id. Runs are independent: many can run at once with ``asyncio.gather``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, Final, cast

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphRecursionError
from langgraph.types import StreamMode
from opentelemetry.context import Context

from agentwatch.telemetry import AgentwatchError, Invocation, Telemetry
from agentwatch.telemetry._invocation import instrument_stream
from agentwatch.telemetry.names import OUTCOME_CANCELLED

from .events import RunEvent, RunFinished, TextDelta, ToolCallFinished, ToolCallStarted
from .lc_tools import langchain_tools
from .results import RunResult, result_from_messages
from .retry import RetryPolicy
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
    """The run did not produce an answer: its own deadline or its step limit ended it."""


class RunTimeoutError(AgentRunError):
    """The run's own deadline (``run_timeout``) passed. A timeout raised inside the run
    (the model's, a tool's) is not this: it propagates as what it is."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"the run took longer than {timeout:g} s")
        self.timeout = timeout


class StepLimitError(AgentRunError):
    """The run took more than ``max_steps`` graph steps without a final answer
    (LangGraph's ``GraphRecursionError``): the model kept calling tools."""

    def __init__(self, max_steps: int) -> None:
        super().__init__(f"the run did not finish within {max_steps} steps")
        self.max_steps = max_steps


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
        retry_policy: RetryPolicy | None = None,
        max_concurrent: int | None = None,
        max_steps: int = RECURSION_LIMIT,
    ) -> None:
        self.name = name
        self.model_name = model_name
        self.telemetry = telemetry
        self.tools = tools
        self.run_timeout = run_timeout
        self.max_input_chars = max_input_chars
        self.max_steps = max_steps  # LangGraph's recursion_limit: model and tool steps
        # Admission: at most this many runs at once; the rest wait their turn (cheaply).
        # One event loop runs every ready callback of every run in each iteration, so
        # bounding the runs in flight bounds how late anything else on the loop runs.
        self._slots = asyncio.Semaphore(max_concurrent) if max_concurrent else None
        telemetry.agents.declare([name])
        telemetry.models.declare([model_name])
        self.graph = create_agent(
            model,
            langchain_tools(tools, telemetry, name, retry_policy),
            system_prompt=system_prompt,
            name=name,
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
        async with self._slot():
            return await self._arun(query, parent, conversation_id)

    def _run_error(self, exc: BaseException, deadline: asyncio.Timeout) -> AgentRunError | None:
        """What ended the run, when it was the run's own limit (None: ``exc`` as it is).

        Only the run's own deadline is the run timeout: a ``TimeoutError`` raised inside
        the run (a model client's or a tool's own deadline) stays what it is.
        """
        if isinstance(exc, TimeoutError) and deadline.expired():
            return RunTimeoutError(self.run_timeout)
        if isinstance(exc, GraphRecursionError):
            return StepLimitError(self.max_steps)
        return None

    def _slot(self) -> asyncio.Semaphore | contextlib.nullcontext[None]:
        return self._slots if self._slots is not None else contextlib.nullcontext()

    async def _arun(
        self, query: str, parent: Context | None, conversation_id: str | None
    ) -> RunResult:
        invocation = self.telemetry.agent_run(
            self.name, self.model_name, conversation_id=conversation_id, parent=parent
        )
        deadline = asyncio.timeout(self.run_timeout)
        invocation.activate()
        try:
            async with deadline:
                state = await self.graph.ainvoke(
                    {"messages": [{"role": "user", "content": query}]},
                    {"recursion_limit": self.max_steps},
                )
        except BaseException as exc:
            invocation.deactivate()
            error = self._run_error(exc, deadline)
            if error is None:
                invocation.end(exc)
                raise
            error.__cause__ = exc
            invocation.end(error)  # the same error.type as a streamed run records
            raise error from exc
        invocation.deactivate()
        result = result_from_messages(state["messages"], *_trace_of(invocation))
        invocation.stop()
        return result

    async def astream(
        self, query: str, *, parent: Context | None = None, conversation_id: str | None = None
    ) -> AsyncGenerator[RunEvent, None]:
        """Run one query, yielding text deltas and tool events as they happen, then
        ``RunFinished``. One ``invoke_agent`` span for the whole stream; closing the
        stream early (a client that went away) cancels the run and ends it as cancelled.
        """
        query = self.check_input(query)
        async with self._slot():
            invocation = self.telemetry.agent_run(
                self.name, self.model_name, conversation_id=conversation_id, parent=parent
            )
            events = instrument_stream(
                invocation, self._events(query, invocation), closed_early=OUTCOME_CANCELLED
            )
            async with aclosing(events):
                async for event in events:
                    yield event

    async def _events(self, query: str, invocation: Invocation) -> AsyncGenerator[RunEvent, None]:
        messages: list[BaseMessage] = [HumanMessage(query)]
        modes: list[StreamMode] = ["messages", "updates"]
        config: RunnableConfig = {"recursion_limit": self.max_steps}
        state: Any = {"messages": messages[:]}
        # Typed as an AsyncIterator; it is an async generator, closed below.
        stream = cast(
            AsyncGenerator[Any, None], self.graph.astream(state, config, stream_mode=modes)
        )
        deadline = asyncio.get_running_loop().time() + self.run_timeout
        async with aclosing(stream):
            while True:
                scope = asyncio.timeout_at(deadline)  # never across a yield
                try:
                    async with scope:
                        mode, data = await anext(stream)
                except StopAsyncIteration:
                    break
                except BaseException as exc:
                    error = self._run_error(exc, scope)
                    if error is None:
                        raise
                    raise error from exc
                for event in _events_of(mode, data, messages):
                    yield event
        yield RunFinished(result_from_messages(messages, *_trace_of(invocation)))


def _trace_of(invocation: Invocation) -> tuple[str, bool]:
    """The run's trace id and whether it was sampled. A trace that was not sampled is
    exported nowhere: its id is not returned ("" as when tracing is off)."""
    ctx = invocation.span.get_span_context()
    sampled = ctx.is_valid and ctx.trace_flags.sampled
    return (format(ctx.trace_id, "032x") if sampled else ""), sampled


def _events_of(mode: str, data: Any, messages: list[BaseMessage]) -> list[RunEvent]:
    """Translate one LangGraph stream item; ``messages`` collects the run's messages."""
    if mode == "messages":
        chunk, metadata = data
        if metadata.get("langgraph_node") == "model" and isinstance(chunk, AIMessageChunk):
            text = chunk.text
            return [TextDelta(text)] if text else []
        return []
    events: list[RunEvent] = []
    for update in (data or {}).values():
        for message in (update or {}).get("messages", []) if isinstance(update, dict) else []:
            messages.append(message)
            if isinstance(message, AIMessage):
                events.extend(
                    ToolCallStarted(c.get("id") or "", c["name"], dict(c.get("args") or {}))
                    for c in message.tool_calls
                )
            elif isinstance(message, ToolMessage):
                events.append(
                    ToolCallFinished(
                        message.tool_call_id,
                        message.name or "",
                        message.text,
                        message.status == "error",
                    )
                )
    return events
