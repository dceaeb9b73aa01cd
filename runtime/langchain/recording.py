"""Never two spans for one call: which LangChain run an instrumented boundary records.

agentwatch records a LangChain operation in one of two ways: at the object's own
boundary (the instrumentor's wrappers, ``InstrumentedChatModel``, ``InstrumentedTool``)
or from LangChain's callbacks (``AgentwatchCallbackHandler``). When both see the same
call, the boundary records it and the handler does not. The rule, for every boundary
and every handler:

- A boundary enters ``recording(kind)`` *before* LangChain fires the operation's start
  callback (``on_chat_model_start``, ``on_tool_start``, ``on_chain_start``) and leaves
  it when the operation ends. ``kind`` is the operation's name: ``chat``,
  ``execute_tool``, ``invoke_agent`` (``agentwatch.telemetry.names``). ``runs`` is how
  many LangChain runs of that kind the call starts: 1, or the number of prompts of one
  ``generate()`` call.
- A callback handler about to record a run asks ``recorded_by_boundary(kind, run_id)``
  in its start callback. True: a boundary records this run, so the handler records
  nothing for it (it may parent the run's children under ``Recording.span``).
- A boundary that can name its run (a tool's ``run_id``, a graph's
  ``config["run_id"]``) starts it under an id of its own, bound to its recording from
  the start (``Recording.run_ids``; ``another_run()`` for each further run of the same
  call, a retry): it claims that run and no other, even when no handler saw it start
  and a run of the same kind nested in it (a tool run inside a tool's body, with the
  handler in its own config) is the first one asked about.
- A chat call cannot name its runs (one per prompt): LangChain fires its start
  callbacks before anything nested in the call can start, so the first ``runs`` chat
  runs asked about while its recording is current are its own, bound to it then.
- A run of the same kind nested deeper (a model called inside a tool, a sub-agent) is
  not the boundary's: it has its own recording if it crosses an instrumented boundary,
  and the handler records it otherwise.

Where a boundary's span goes: under what is current when it starts, unless a callback
handler traces the call's parent run (``RunSpans``, among the call's callbacks): then
under the span the handler gives that run, as the handler would have placed the call
itself (the handler's agent spans are never current: see ``callbacks.py``).

The marker is a ``ContextVar``, so it follows asyncio tasks and LangChain's executor
hops (which copy the context); setting and resetting it costs well under a microsecond.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, Generic, TypeVar
from uuid import UUID, uuid4

from langchain_core.runnables.config import var_child_runnable_config
from langgraph.errors import GraphBubbleUp
from opentelemetry.context import Context
from opentelemetry.trace import Span

from agentwatch.telemetry import Invocation, treat_as_control_flow


class Recording:
    """An operation a boundary is recording, as long as it runs.

    ``kind``: ``chat``, ``execute_tool`` or ``invoke_agent``. ``runs``: how many
    LangChain runs of ``kind`` this call starts (the prompts of one ``generate()``; 1
    for everything else). ``run_ids``: the LangChain runs bound to it so far (at most
    ``runs``). ``span``: the boundary's span once it has started (a chat span starts
    after the callback). ``owner``: the object whose boundary records (the model, the
    tool, the graph): a boundary of the same object nested directly in it (``invoke``
    calling ``stream``, ``InstrumentedChatModel`` over the instrumentor's wrappers)
    records nothing more. ``agent``: the name of the agent whose run this is (the
    nearest ``invoke_agent``), which tool calls are labelled with. ``on_chat_model``:
    told the request model of each chat call beneath that agent (an agent started
    without knowing its model takes the first). The last two are the enclosing
    recording's unless given. ``context``: an agent run's own context (its span and
    cost total), for the calls a callback handler places beneath it.
    """

    __slots__ = (
        "agent",
        "context",
        "kind",
        "on_chat_model",
        "owner",
        "run_ids",
        "runs",
        "span",
    )
    agent: str
    on_chat_model: Callable[[str], None] | None

    def __init__(
        self,
        kind: str,
        runs: int = 1,
        run_ids: list[UUID] | None = None,
        span: Span | None = None,
        owner: object = None,
        agent: str | None = None,
        on_chat_model: Callable[[str], None] | None = None,
        context: Context | None = None,
    ) -> None:
        self.kind = kind
        self.runs = runs
        self.run_ids: list[UUID] = [] if run_ids is None else run_ids
        self.span = span
        self.context = context
        self.owner = owner
        enclosing = _current.get()
        if agent is None:
            agent = enclosing.agent if enclosing is not None else ""
        if on_chat_model is None and enclosing is not None:
            on_chat_model = enclosing.on_chat_model
        self.agent = agent
        self.on_chat_model = on_chat_model

    def __repr__(self) -> str:
        return f"Recording({self.kind!r}, runs={self.runs}, agent={self.agent!r})"

    def claims(self, kind: str, run_id: UUID) -> bool:
        """Whether the LangChain run ``run_id`` of ``kind`` is this recording's (binding
        it when this is one of the first ``runs`` asked about)."""
        if kind != self.kind:
            return False
        if run_id in self.run_ids:
            return True
        if len(self.run_ids) < self.runs:
            self.run_ids.append(run_id)
            return True
        return False


_current: ContextVar[Recording | None] = ContextVar("agentwatch_recording", default=None)

# LangGraph's interrupt() and Command handoffs (to a parent graph) bubble up as
# exceptions: a run paused or handed off, not failed, wherever it is recorded.
treat_as_control_flow(GraphBubbleUp)


def current() -> Recording | None:
    """The innermost operation a boundary is recording here, if any."""
    return _current.get()


def enter(recording: Recording) -> Token[Recording | None]:
    """Make ``recording`` current (the hot-path form of ``recording()``)."""
    return _current.set(recording)


def leave(token: Token[Recording | None]) -> None:
    """Undo the ``enter`` that returned ``token``."""
    _current.reset(token)


def current_agent() -> str:
    """The name of the agent whose run this is ("" outside any)."""
    marker = _current.get()
    return marker.agent if marker is not None else ""


def within(instance: object) -> bool:
    """Whether ``instance``'s own boundary is recording here already (its span started):
    a nested boundary of the same object passes the call through."""
    marker = _current.get()
    return marker is not None and marker.owner is instance and marker.span is not None


def within_run(instance: object, run_id: object) -> bool:
    """``within`` for a boundary that names its run (a tool, a graph): the same call
    passed on (``invoke`` calling ``stream``, our tool over the instrumentor's wrapper)
    carries the run id the outer boundary gave it. A call of the same object under
    another run (a tool that calls itself, a graph run from its own node) is a call
    of its own."""
    marker = _current.get()
    return (
        marker is not None
        and marker.owner is instance
        and marker.span is not None
        and run_id in marker.run_ids
    )


def runnable_config(args: tuple[object, ...], kwargs: Mapping[str, object]) -> Mapping[str, Any]:
    """The config of a Runnable call ``(input, config, ...)`` ({} when none was given)."""
    config = args[1] if len(args) > 1 else kwargs.get("config")
    return config if isinstance(config, Mapping) else {}


def call_callbacks(config: object) -> object:
    """The callbacks a LangChain call made with ``config`` runs with: the config's
    own, else those LangChain hands down to calls made without one (inside a node, a
    tool or a chain step), as ``ensure_config`` merges them."""
    given = config.get("callbacks") if isinstance(config, Mapping) else None
    if given is not None:
        return given
    inherited = var_child_runnable_config.get()
    return inherited.get("callbacks") if inherited is not None else None


@contextmanager
def recording(
    kind: str,
    *,
    runs: int = 1,
    span: Span | None = None,
    owner: object = None,
    agent: str | None = None,
) -> Iterator[Recording]:
    """A boundary records an operation of ``kind`` while the block runs (``agent``:
    the enclosing one's unless given)."""
    marker = Recording(kind, runs, span=span, owner=owner, agent=agent)
    token = _current.set(marker)
    try:
        yield marker
    finally:
        _current.reset(token)


def own_run(given: object) -> UUID:
    """The id a boundary starts its LangChain run under: the caller's, or a new one."""
    return given if isinstance(given, UUID) else uuid4()


def another_run() -> UUID:
    """The id of a further LangChain run of the current recording's call (a retry),
    bound to it: the handler records nothing for it either."""
    run_id = uuid4()
    marker = _current.get()
    if marker is not None:
        marker.runs += 1
        marker.run_ids.append(run_id)
    return run_id


def recorded_by_boundary(kind: str, run_id: UUID) -> bool:
    """True when an instrumented boundary records this LangChain run, so a callback
    handler must not record it (see the module's rule)."""
    marker = _current.get()
    return marker is not None and marker.claims(kind, run_id)


class RunSpans:
    """A callback handler that knows where each LangChain run it traces belongs."""

    __slots__ = ()

    def context_of(self, run_id: UUID) -> Context | None:
        """The context what runs beneath ``run_id`` starts in: its span, in its agent
        run's context (None: not traced here)."""
        raise NotImplementedError


def parent_context(callbacks: object) -> Context | None:
    """The context to start a boundary's span in, from the call's ``callbacks`` (a
    LangChain callback or run manager): the span a ``RunSpans`` handler among them gives
    the call's parent run; None (what is current) when there is none."""
    parent_run_id = getattr(callbacks, "parent_run_id", None)
    if parent_run_id is None:
        return None
    for handler in getattr(callbacks, "handlers", ()):
        if isinstance(handler, RunSpans):
            context = handler.context_of(parent_run_id)
            if context is not None:
                return context
    return None


Op = TypeVar("Op", bound=Invocation)


class Recorded(Generic[Op]):
    """``with Recorded(invocation, marker):`` — the boundary's operation: its span
    current and ended as ``with invocation`` has it, its marker current meanwhile."""

    __slots__ = ("_invocation", "_marker", "_token")

    def __init__(self, invocation: Op, marker: Recording) -> None:
        self._invocation = invocation
        self._marker = marker
        self._token: Token[Recording | None] | None = None

    def __enter__(self) -> Op:
        self._token = _current.set(self._marker)
        return self._invocation.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._invocation.__exit__(exc_type, exc, tb)
        finally:
            if self._token is not None:
                _current.reset(self._token)
