"""``Agent``: a LangChain 1.x agent (``create_agent``) whose runs are fully observed.

``await agent.arun(query)`` is one ``invoke_agent {name}`` span (its own trace unless a
parent context is given) with the model's ``chat`` spans and the tools'
``execute_tool`` spans beneath it, and returns the answer with its tool calls, token
usage and trace id. Runs are independent: many can run at once with ``asyncio.gather``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import aclosing
from typing import Any, Final

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
from langchain_core.tools import BaseTool
from langgraph.errors import GraphRecursionError
from langgraph.types import StreamMode
from opentelemetry.context import Context

from agentwatch.telemetry import (
    AgentRunInvocation,
    AgentwatchError,
    ConfigurationError,
    Invocation,
    Telemetry,
    instrument_stream,
)
from agentwatch.telemetry.names import OP_INVOKE_AGENT, OUTCOME_CANCELLED

from ..budget import run_budget
from ..events import RunEvent, RunFinished, TextDelta, ToolCallFinished, ToolCallStarted
from ..langchain.adopt import adopt_model, agent_tools
from ..langchain.chat_calls import request_model
from ..langchain.providers import provider_name
from ..langchain.recording import Recorded, Recording, own_run
from ..langchain.streams import marked_aiter, opened
from ..results import RunResult, result_from_messages
from ..retry import RetryPolicy
from ..tools.registry import RESEARCH_INSTRUCTIONS, ToolRegistry, ToolSpec
from .admission import Admission
from .frames import release_frames
from .prompt import default_system_prompt

DEFAULT_AGENT_NAME: Final = "research_agent"
DEFAULT_SYSTEM_PROMPT: Final = RESEARCH_INSTRUCTIONS  # the built-in tools' default prompt
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
    """``model``: any LangChain chat model, recorded (``adopt.adopt_model``: as it is when
    instrumented already, else an instrumented copy retried under ``retry_policy``).
    ``tools``: a ``ToolRegistry``, or ``ToolSpec``s and LangChain tools as they are.
    ``system_prompt`` None: the tools' own instructions, else a prompt naming each tool
    (``prompt.py``). ``name`` names the agent's spans (``invoke_agent {name}``) and
    metrics (``gen_ai_agent_name``); ``model_name`` None: the model's own."""

    def __init__(
        self,
        model: BaseChatModel,
        tools: ToolRegistry | Iterable[ToolSpec | BaseTool],
        *,
        telemetry: Telemetry,
        model_name: str | None = None,
        name: str = DEFAULT_AGENT_NAME,
        system_prompt: str | None = None,
        run_timeout: float = 120.0,
        max_input_chars: int = 32_000,
        retry_policy: RetryPolicy | None = None,
        max_concurrent: int | None = None,
        max_steps: int = RECURSION_LIMIT,
        admission: Admission | None = None,
        budget_usd: float | None = None,
    ) -> None:
        self.name = checked_name(name)
        self.model = adopt_model(model, telemetry, retry_policy)
        self.model_name = model_name or request_model(self.model, {})
        self.telemetry = telemetry
        self.tools = tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools)
        self.system_prompt = (
            default_system_prompt(self.tools) if system_prompt is None else system_prompt
        )
        self.run_timeout = run_timeout
        self.max_input_chars = max_input_chars
        self.max_steps = max_steps  # LangGraph's recursion_limit: model and tool steps
        # What a run may spend, USD (AGENTWATCH_RUN_BUDGET_USD): then it makes no more
        # model calls (budget.py); a run may ask for less, never more. None: no limit.
        self.budget_usd = budget_usd
        # Admission: at most this many runs at once; the rest wait their turn (cheaply).
        # One event loop runs every ready callback of every run in each iteration, so
        # bounding the runs in flight bounds how late anything else on the loop runs.
        # Runs of batches take at most three quarters of the slots (admission.py).
        # ``admission`` given (AgentRuntime's: adaptive by default) wins over the number.
        self.admission = admission or Admission(max_concurrent, telemetry=telemetry)
        telemetry.agents.declare([name])
        telemetry.models.declare([self.model_name])
        # before serve, worker and batch freeze start-up's heap (cli/heap.py)
        telemetry.prices.preload()
        self.graph = create_agent(
            self.model,
            agent_tools(self.tools, telemetry, name, retry_policy),
            system_prompt=self.system_prompt,
            name=name,
        )

    def unpriced_budget(self) -> str | None:
        """Why a budget cannot stop this agent's model calls: its model has no price
        (None: it has one). Its calls are still made, counted as unpriced."""
        provider = provider_name(self.model)
        if self.telemetry.prices.price(provider, self.model_name) is not None:
            return None
        return (
            f"model {self.model_name!r} at {provider!r} has no price: a budget cannot stop "
            "its calls (give it one in AGENTWATCH_PRICES_FILE)"
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
        if not query.isascii() and not _encodable(query):
            # A lone surrogate ("\ud800" in JSON) cannot be sent to any model: the
            # caller's mistake, refused before the run starts (never a failed run).
            raise AgentInputError("the query is not valid Unicode text (a lone surrogate)")
        return query

    async def arun(
        self,
        query: str,
        *,
        parent: Context | None = None,
        conversation_id: str | None = None,
        batch: bool = False,
        budget_usd: float | None = None,
    ) -> RunResult:
        """Run one query to its final answer, as one ``invoke_agent`` span.

        ``run_timeout`` counts from the call: the wait for a run slot is part of it.
        ``batch=True`` marks a run of a batch: it may take only part of the slots, and
        its ``run_timeout`` counts from when it gets one (a batch task waits in line for
        as long as its batch lets it: the task's own timeout bounds the wait).
        ``budget_usd``: this run's budget, at most the agent's (``budget.run_budget``).
        """
        query, deadline = await self._admitted(query, batch)
        try:
            return await self._arun(query, parent, conversation_id, deadline, budget_usd)
        finally:
            self.admission.release(batch=batch)

    async def _admitted(
        self,
        query: object,
        batch: bool,
        on_wait: Callable[[], Awaitable[None]] | None = None,
        interval: float = 10.0,
    ) -> tuple[str, float]:
        """Check the query and wait for a run slot: the query and the run's deadline.

        An interactive run's deadline counts from the call, the wait included; a batch's
        run waits without one and its deadline starts with its slot. A run that ends
        waiting never started (no ``invoke_agent`` span): admission counts it in
        ``agentwatch_admission_shed_total{reason}``; one it refuses (too many waiting,
        or waiting too long) raises ``AdmissionRefused``.
        """
        query = self.check_input(query)
        deadline = None if batch else self._deadline()
        try:
            await self.admission.acquire(
                deadline=deadline, batch=batch, on_wait=on_wait, interval=interval
            )
        except TimeoutError:
            raise RunTimeoutError(self.run_timeout) from None
        return query, self._deadline() if deadline is None else deadline

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.run_timeout

    def _raise_run_limit(self, exc: BaseException, deadline: asyncio.Timeout) -> None:
        """Raise the run's own error when ``exc`` is the run's own limit; otherwise return
        (the caller re-raises ``exc`` as it is).

        Only the run's own deadline is the run timeout: a ``TimeoutError`` raised inside
        the run (a model client's or a tool's own deadline) stays what it is.
        """
        if isinstance(exc, TimeoutError) and deadline.expired():
            raise RunTimeoutError(self.run_timeout) from exc
        if isinstance(exc, GraphRecursionError):
            raise StepLimitError(self.max_steps) from exc

    async def _arun(
        self,
        query: str,
        parent: Context | None,
        conversation_id: str | None,
        at: float,
        budget_usd: float | None,
    ) -> RunResult:
        invocation = self.telemetry.agent_run(
            self.name,
            self.model_name,
            conversation_id=conversation_id,
            parent=parent,
            budget_usd=run_budget(self.budget_usd, budget_usd),
        )
        config, marker = self._graph_run(invocation)
        # Ends as the run's own error when a limit ended it, as a stream does.
        with Recorded(invocation, marker):
            deadline = asyncio.timeout_at(at)
            try:
                async with deadline:
                    state = await self.graph.ainvoke(
                        {"messages": [{"role": "user", "content": query}]}, config
                    )
            except BaseException as exc:
                release_frames(exc)
                self._raise_run_limit(exc, deadline)
                raise
            return self._result(state["messages"], invocation)

    async def astream(
        self,
        query: str,
        *,
        parent: Context | None = None,
        conversation_id: str | None = None,
        on_wait: Callable[[], Awaitable[None]] | None = None,
        wait_interval: float = 10.0,
        budget_usd: float | None = None,
        on_admitted: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncGenerator[RunEvent, None]:
        """Run one query, yielding text deltas and tool events as they happen, then
        ``RunFinished``. One ``invoke_agent`` span for the whole stream; closing the
        stream early (a client that went away) cancels the run and ends it as cancelled.

        While the run waits for a slot, ``on_wait()`` is awaited at once and then every
        ``wait_interval`` seconds (the server sends an SSE keep-alive comment); the wait
        counts against ``run_timeout``. ``on_admitted()`` is awaited once the run has its
        slot, before its first step (the server sends its 200 then).
        """
        query, deadline = await self._admitted(query, False, on_wait, wait_interval)
        try:
            if on_admitted is not None:
                await on_admitted()
            invocation = self.telemetry.agent_run(
                self.name,
                self.model_name,
                conversation_id=conversation_id,
                parent=parent,
                budget_usd=run_budget(self.budget_usd, budget_usd),
            )
            events = instrument_stream(
                invocation,
                self._events(query, invocation, deadline),
                closed_early=OUTCOME_CANCELLED,
            )
            async with aclosing(events):
                async for event in events:
                    yield event
        finally:
            self.admission.release()

    async def _events(
        self, query: str, invocation: AgentRunInvocation, deadline: float
    ) -> AsyncGenerator[RunEvent, None]:
        messages: list[BaseMessage] = [HumanMessage(query)]
        modes: list[StreamMode] = ["messages", "updates"]
        state: Any = {"messages": messages[:]}
        config, marker = self._graph_run(invocation)
        # The marker current while the graph's stream is opened (the instrumentor's
        # wrapper decides then) and while it runs each step (a handler's callbacks).
        stream = marked_aiter(
            opened(marker, lambda: self.graph.astream(state, config, stream_mode=modes)), marker
        )
        async with aclosing(stream):
            while True:
                scope = asyncio.timeout_at(deadline)  # never across a yield
                try:
                    async with scope:
                        mode, data = await anext(stream)
                except StopAsyncIteration:
                    break
                except BaseException as exc:
                    release_frames(exc)
                    self._raise_run_limit(exc, scope)
                    raise
                for event in _events_of(mode, data, messages):
                    yield event
        yield RunFinished(self._result(messages, invocation))

    def _graph_run(self, invocation: Invocation) -> tuple[RunnableConfig, Recording]:
        """The run's graph call: its config, under a LangChain run id of its own, and
        the marker that says this agent's ``invoke_agent`` records that run (the
        instrumentor's graph wrapper and a callback handler record nothing more)."""
        run_id = own_run(None)
        config: RunnableConfig = {"recursion_limit": self.max_steps, "run_id": run_id}
        marker = Recording(
            OP_INVOKE_AGENT,
            run_ids=[run_id],
            span=invocation.span,
            owner=self.graph,
            agent=self.name,
            context=invocation.context,
        )
        return config, marker

    def _result(self, messages: list[BaseMessage], invocation: AgentRunInvocation) -> RunResult:
        trace_id, sampled = _trace_of(invocation, self.telemetry.exports_spans)
        spend = invocation.spend
        return result_from_messages(
            messages, trace_id, sampled, spend.total_usd, spend.unpriced_calls
        )


def checked_name(name: str) -> str:
    """An agent's name, which its spans and metrics carry: some text."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"the agent's name must be some text, got {name!r}")
    return name


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _trace_of(invocation: Invocation, exported: bool) -> tuple[str, bool]:
    """The run's trace id and whether it was sampled. A trace no backend will have (not
    sampled, or ``exported`` False: spans go nowhere) has no id: "", as with tracing off."""
    ctx = invocation.span.get_span_context()
    sampled = ctx.is_valid and ctx.trace_flags.sampled
    return (format(ctx.trace_id, "032x") if sampled and exported else ""), sampled


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
