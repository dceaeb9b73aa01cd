"""``AgentwatchCallbackHandler``: the same spans and metrics for users' own LangChain code.

Our ``Agent`` is instrumented at the model and tool boundaries directly (the fast
path); this handler is the bridge for chains and agents you build yourself::

    await my_graph.ainvoke(inputs, config={"callbacks": [AgentwatchCallbackHandler()]})

What becomes a span, linked by LangChain's run ids (never by which task runs what, so
many invocations at once under ``asyncio.gather`` keep their own traces):

- ``invoke_agent {name}``. A chain run is an agent run when

  1. it is the outermost run (no parent run): the call the handler was given to. Its
     name: the handler's ``agent_name``, else the run's name;
  2. or LangGraph runs nodes under it and it has a name: the run of a named graph,
     whatever its depth. LangGraph tags every node run it starts ``graph:step:<n>``, and
     a node run's parent is its graph's run. So each named ``create_agent`` sub-agent
     (called from a supervisor's tool or added as a node), a named compiled graph added
     as a node or invoked inside a node or a tool, gets its own ``invoke_agent`` span
     beneath the span of the run that called it, named by its run name: the graph's
     ``name`` (``create_agent(name=...)``, ``compile(name=...)``) or a ``run_name``. A
     graph compiled without a name (LangGraph names it ``LangGraph``) is no agent, as
     for the instrumentor (``agent_calls.UNNAMED_GRAPH``). The span opens when the
     graph's first node starts, back-dated to the graph run's own start (LangGraph
     reports nothing of a graph before its first node).

  An agent run's ``gen_ai.conversation.id`` is LangGraph's ``thread_id`` (metadata).

  Any other chain run (a node, a ``RunnableSequence``, a lambda) has no span of its
  own: what it starts nests under the nearest run above it that has one.
- ``chat {model}`` for every chat model call (``chat`` when the model has no name, as
  the semantic conventions ask) and ``execute_tool {tool}`` for every tool call,
  beneath their agent. A tool's span and its duration metric carry its agent's name. An
  agent whose model is not known when it starts (``ls_model_name``) takes it from the
  first chat call made directly beneath it: ``gen_ai.request.model`` on its span and
  the ``gen_ai_request_model`` label of its duration. ``gen_ai.provider.name``: the
  chat run's ``ls_provider`` or ``_llm_type`` mapped to the conventions' values
  (``providers.py``).

Never two spans for one call: a run an instrumented boundary records
(``InstrumentedChatModel``, agentwatch's tools, the instrumentor's wrappers; the marker
of ``recording.py``, asked in the run's start callback) is not recorded here again.
What runs beneath it nests under the boundary's span, and an agent still takes its
model from a chat call so recorded. The boundary's own span nests where the handler
would have put the call: the handler is a ``recording.RunSpans``, which the boundary
asks for the span of the call's parent run (an ``InstrumentedChatModel``'s chat spans
beneath their agent's, our tools' beneath theirs).

Current while its work runs: a tool's span is made current in ``on_tool_start`` and
restored in ``on_tool_end`` / ``on_tool_error``. LangChain calls both in the task (or
thread) that runs the tool, and runs the tool's body, sync or async, in a copy of that
context taken after the start callback, so a user's own spans and ``observe()`` calls
inside a tool nest under its ``execute_tool``. The span is restored only while it is
still the current one (whatever was made current after it stays so). Agent and chat
spans are not made current: in async code LangChain calls a chain's and a model call's
end callbacks in a new task (its ``shielded`` ``on_chain_end`` / ``on_llm_end``), where
the caller's context cannot be restored, so an ended span would stay current in the
caller after the run (LangGraph even runs a step's only node in the caller's task).
Spans started in a node's or a chain step's own code, outside a tool, nest under what
was current when the run was called; the handler's own spans are linked by run ids,
never by what is current.

The handler is synchronous and ``run_inline``: LangChain dispatches a non-inline
handler through ``asyncio.gather`` (measured ~+190 µs per run) and a sync one without
``run_inline`` to a thread pool.
"""

from __future__ import annotations

import threading
import time
from contextlib import suppress
from contextvars import Token
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span

from agentwatch.telemetry import (
    AgentRunInvocation,
    Invocation,
    LlmCallInvocation,
    Telemetry,
    ToolCallInvocation,
    get_telemetry,
)
from agentwatch.telemetry.names import OP_CHAT, OP_EXECUTE_TOOL, OP_INVOKE_AGENT

from .agent_calls import UNNAMED_GRAPH
from .chat_calls import record_result, start_llm_call
from .providers import SEMCONV_PROVIDERS, semconv_provider
from .recording import Recording, RunSpans, current, recorded_by_boundary
from .tools import ToolReportedError, tool_result

NODE_TAG = "graph:step:"
"""The tag LangGraph puts on every node run it starts (``graph:step:<n>``)."""


class _Agent:
    """The agent runs belong to: its name (for its tools) and, when the handler records
    it, its invocation, which takes the model of the first chat call beneath it.
    ``context``: what the calls beneath it start in (the run's, carrying its cost
    total), the invocation's or, for an agent a boundary records, the boundary's."""

    __slots__ = ("context", "invocation", "model", "name")

    def __init__(
        self,
        name: str,
        model: str,
        invocation: AgentRunInvocation | None,
        context: Context | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.invocation = invocation
        self.context = invocation.context if invocation is not None else context

    def saw_model(self, model: str) -> None:
        if model and not self.model:
            self.model = model
            if self.invocation is not None:
                self.invocation.set_request_model(model)


class _Run:
    """A LangChain run between its start and its end callback."""

    __slots__ = (
        "agent",
        "attached",
        "invocation",
        "metadata",
        "name",
        "span",
        "start_ns",
        "started_at",
        "token",
    )

    def __init__(
        self, span: Span | None, agent: _Agent | None, invocation: Invocation | None = None
    ) -> None:
        self.span = span
        """What runs beneath this one nest under: its own span, else the nearest above."""
        self.agent = agent
        self.invocation = invocation
        """The span this run ends (None: it has none of its own)."""
        self.token: Token[Context] | None = None
        self.attached: Context | None = None
        self.name = ""
        self.metadata: dict[str, Any] | None = None
        self.start_ns = 0
        """Not 0: a chain run that becomes an agent run if LangGraph runs nodes under it."""
        self.started_at = 0.0


class AgentwatchCallbackHandler(RunSpans, BaseCallbackHandler):
    run_inline = True
    raise_error = False

    def __init__(self, telemetry: Telemetry | None = None, *, agent_name: str = "") -> None:
        self._telemetry = telemetry
        self._agent_name = agent_name
        self._runs: dict[UUID, _Run] = {}
        # Sync graphs run the nodes of one step in threads: one of them opens the span.
        self._promoting = threading.Lock()

    @property
    def telemetry(self) -> Telemetry:
        return self._telemetry or get_telemetry()

    # -- runs --------------------------------------------------------------------------
    def context_of(self, run_id: UUID) -> Context | None:
        return _call_parent(self._runs.get(run_id))

    def _parent(self, parent_run_id: UUID | None) -> _Run | None:
        return self._runs.get(parent_run_id) if parent_run_id is not None else None

    def _agent_run(
        self,
        name: str,
        metadata: dict[str, Any] | None,
        parent: Span | None,
        start_ns: int | None = None,
        started_at: float | None = None,
    ) -> tuple[AgentRunInvocation, _Agent]:
        meta = metadata or {}
        model = str(meta.get("ls_model_name") or "")
        thread = meta.get("thread_id")  # LangGraph's conversation: configurable thread_id
        invocation = self.telemetry.agent_run(
            name,
            model,
            conversation_id=None if thread is None else str(thread),
            parent=_context(parent),
            start_time_ns=start_ns,
            started_at=started_at,
        )
        return invocation, _Agent(name, model, invocation)

    def _become_agent(self, run_id: UUID, run: _Run) -> None:
        """A chain run LangGraph runs nodes under is a graph's: its agent span opens now,
        started when the run did (unless a boundary records this agent)."""
        with self._promoting:
            if not run.start_ns:  # another thread was first
                return
            boundary = _boundary(OP_INVOKE_AGENT, run_id)
            if boundary is not None:
                run.agent = _Agent(run.name, "", None, boundary.context)
                run.span = boundary.span or run.span
            else:
                invocation, run.agent = self._agent_run(
                    run.name, run.metadata, run.span, run.start_ns, run.started_at
                )
                run.invocation, run.span = invocation, invocation.span
            run.start_ns = 0  # last: a reader that sees 0 sees the span

    def _end(self, run_id: UUID, error: BaseException | None = None) -> None:
        run = self._runs.pop(run_id, None)
        if run is None:
            return
        if run.token is not None:
            _restore(run)
        if run.invocation is not None:
            run.invocation.end(error)

    # -- chains ------------------------------------------------------------------------
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: dict[str, Any] | Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = str(kwargs.get("name") or (serialized or {}).get("name") or "chain")
        if parent_run_id is None:
            name = self._agent_name or name
            boundary = _boundary(OP_INVOKE_AGENT, run_id)
            if boundary is not None:
                model = str((metadata or {}).get("ls_model_name") or "")
                agent = _Agent(name, model, None, boundary.context)
                self._runs[run_id] = _Run(boundary.span, agent)
                return
            invocation, agent = self._agent_run(name, metadata, None)
            self._runs[run_id] = _Run(invocation.span, agent, invocation)
            return
        parent = self._runs.get(parent_run_id)
        if parent is not None and parent.start_ns and tags and _is_node(tags):
            self._become_agent(parent_run_id, parent)
        run = _Run(parent.span, parent.agent) if parent is not None else _Run(None, None)
        self._runs[run_id] = run
        if name != UNNAMED_GRAPH:  # LangGraph's name for a graph without one: no agent
            run.name = name
            run.metadata = metadata
            run.start_ns = time.time_ns()
            run.started_at = self.telemetry.clock()

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    # -- chat models -------------------------------------------------------------------
    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        params = kwargs.get("invocation_params") or {}
        meta = metadata or {}
        model = str(
            params.get("model") or params.get("model_name") or meta.get("ls_model_name") or ""
        )
        provider = _provider(str(meta.get("ls_provider") or ""), str(params.get("_type") or ""))
        parent = self._parent(parent_run_id)
        agent = parent.agent if parent is not None else None
        if agent is not None:
            agent.saw_model(model)
        if recorded_by_boundary(OP_CHAT, run_id):
            return  # an instrumented model records this call: nothing beneath it
        invocation = start_llm_call(
            self.telemetry,
            model,
            provider,
            messages[0] if messages else [],
            stream=bool(params.get("stream")),
            parent=_call_parent(parent),
        )
        self._runs[run_id] = _Run(invocation.span, agent, invocation)

    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.get(run_id)
        if run is not None and isinstance(run.invocation, LlmCallInvocation):
            run.invocation.on_chunk()

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.get(run_id)
        invocation = run.invocation if run is not None else None
        if isinstance(invocation, LlmCallInvocation) and response.generations:
            generations = [g for g in response.generations[0] if isinstance(g, ChatGeneration)]
            record_result(invocation, generations, response.llm_output, self.telemetry.capturing)
        self._end(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    # -- tools -------------------------------------------------------------------------
    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        name = (serialized or {}).get("name") or kwargs.get("name") or "tool"
        parent = self._parent(parent_run_id)
        agent = parent.agent if parent is not None else None
        boundary = _boundary(OP_EXECUTE_TOOL, run_id)
        if boundary is not None:  # an instrumented tool records this call
            span = boundary.span or (parent.span if parent is not None else None)
            self._runs[run_id] = _Run(span, agent)
            return
        invocation = self.telemetry.tool_call(
            str(name),
            agent_name=agent.name if agent is not None else self._agent_name,
            call_id=kwargs.get("tool_call_id"),
            parent=_context(parent.span if parent is not None else None),
        )
        if self.telemetry.capturing:
            invocation.capture(arguments=input_str)
        run = _Run(invocation.span, agent, invocation)
        self._runs[run_id] = run
        _make_current(run, invocation.span)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.get(run_id)
        invocation = run.invocation if run is not None else None
        if isinstance(invocation, ToolCallInvocation) and self.telemetry.capturing:
            invocation.capture(result=tool_result(output))
        if getattr(output, "status", None) == "error":
            self._end(run_id, ToolReportedError(tool_result(output)))
        else:
            self._end(run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)


def _boundary(kind: str, run_id: UUID) -> Recording | None:
    """The instrumented boundary that records this run, if one does: the handler records
    nothing for it, and what runs beneath it nests under the boundary's span."""
    return current() if recorded_by_boundary(kind, run_id) else None


def _provider(stated: str, llm_type: str) -> str:
    """``gen_ai.provider.name`` from a chat run's metadata: its ``ls_provider`` or its
    ``_llm_type``, whichever the conventions (``providers.py``) know, else what the model
    states. (A model that does not state its provider gets its class name as
    ``ls_provider`` from LangChain: the instrumentor, which sees the model, uses its
    ``_llm_type`` then; the handler cannot tell the two apart.)"""
    for raw in (stated, llm_type):
        if raw in SEMCONV_PROVIDERS:
            return semconv_provider(raw)
    return semconv_provider(stated or llm_type)


def _is_node(tags: list[str]) -> bool:
    return any(tag.startswith(NODE_TAG) for tag in tags)


def _context(span: Span | None) -> Context | None:
    return trace.set_span_in_context(span) if span is not None else None


def _call_parent(parent: _Run | None) -> Context | None:
    """What a call beneath ``parent`` starts in: the parent run's span, in its agent
    run's context (which carries the run's cost total, so the call adds to it)."""
    if parent is None or parent.span is None:
        return None
    agent = parent.agent
    return trace.set_span_in_context(parent.span, agent.context if agent is not None else None)


def _make_current(run: _Run, span: Span) -> None:
    run.attached = trace.set_span_in_context(span)
    run.token = otel_context.attach(run.attached)


def _restore(run: _Run) -> None:
    """Undo ``_make_current`` while its span is still what is current here."""
    token, run.token = run.token, None
    if token is None or otel_context.get_current() is not run.attached:
        return
    with suppress(ValueError, RuntimeError):  # another context's token: not ours to undo
        token.var.reset(token)
