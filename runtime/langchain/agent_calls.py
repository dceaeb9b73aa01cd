"""A named LangGraph graph's run is one ``invoke_agent {name}`` span.

``GraphBoundary`` wraps ``Pregel.invoke`` / ``ainvoke`` / ``stream`` / ``astream`` (every
compiled graph, ``create_agent``'s included, is a ``Pregel``) as wrapt-style wrappers.

What counts as an agent: a graph with a name of its own — ``create_agent(...,
name="shop")``, ``builder.compile(name="shop")``. A graph compiled without one is
named ``LangGraph`` by LangGraph (``create_agent`` without ``name``, a plain
``StateGraph``, an ``@entrypoint``): that is no agent's name, so such a graph records no
span of its own, and its model and tool calls belong to the enclosing agent (or stand
alone). A named graph run as a node or from a tool of another (a supervisor's
sub-agents) is its own ``invoke_agent`` span beneath the enclosing one, and the tool
calls beneath it carry its name.

The span is current while the graph runs (never across a ``yield`` of a stream), so
LangGraph's tasks, which copy the context, start their chat and tool spans beneath it;
``asyncio.gather`` of many runs gives one trace each. LangGraph's ``thread_id``
(``config["configurable"]["thread_id"]``) is the span's ``gen_ai.conversation.id``; the
agent's model (``gen_ai.request.model`` and the duration's label), not known when the
run starts, is that of the first chat call beneath it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import aclosing
from typing import Any, Final
from uuid import UUID

from agentwatch.telemetry import (
    AgentRunInvocation,
    Telemetry,
    get_telemetry,
    instrument_iter,
    instrument_stream,
)
from agentwatch.telemetry.names import OP_INVOKE_AGENT, OUTCOME_CANCELLED

from .recording import (
    Recorded,
    Recording,
    call_callbacks,
    own_run,
    parent_context,
    runnable_config,
    within_run,
)
from .streams import marked_aiter, marked_iter, opened

UNNAMED_GRAPH: Final = "LangGraph"
"""LangGraph's name for a graph compiled without ``name=``: not an agent."""

Wrapped = Callable[..., Any]


def agent_name(graph: Any) -> str | None:
    """The agent name of a graph, None when it has none of its own."""
    name = getattr(graph, "name", None)
    if isinstance(name, str) and name and name != UNNAMED_GRAPH:
        return name
    return None


def _recorded_here(graph: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    """The agent name to record this graph's run under; None: not an agent, or its
    own boundary records the run already (``invoke`` calling ``stream``)."""
    name = agent_name(graph)
    if name is None or within_run(graph, runnable_config(args, kwargs).get("run_id")):
        return None
    return name


def _conversation_id(config: Mapping[str, Any]) -> str | None:
    configurable = config.get("configurable")
    thread = configurable.get("thread_id") if isinstance(configurable, Mapping) else None
    return None if thread is None else str(thread)


def _with_run_id(
    args: tuple[Any, ...], kwargs: dict[str, Any], config: Mapping[str, Any], run_id: UUID
) -> tuple[Any, ...]:
    """The graph's call under ``run_id`` (``config["run_id"]``, which LangGraph starts
    the graph's run with): ``args``, with the config replaced (``kwargs`` in place)."""
    if config.get("run_id") == run_id:
        return args
    given = {**config, "run_id": run_id}
    if len(args) > 1:
        return (args[0], given, *args[2:])
    kwargs["config"] = given
    return args


class _FirstModel:
    """An agent run's model: the first one called beneath it."""

    __slots__ = ("_invocation", "_known")

    def __init__(self, invocation: AgentRunInvocation) -> None:
        self._invocation = invocation
        self._known = False

    def note(self, model: str) -> None:
        if not self._known and model:
            self._known = True
            self._invocation.set_request_model(model)


class GraphBoundary:
    """A named graph's recorded runs, into ``telemetry`` (None: the process's, looked
    up at each call)."""

    __slots__ = ("_telemetry",)

    def __init__(self, telemetry: Telemetry | None = None) -> None:
        self._telemetry = telemetry

    def _start(
        self, name: str, graph: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[AgentRunInvocation, Recording, tuple[Any, ...]]:
        """The run's span, its marker (bound to the graph's own LangChain run, so that
        it claims no other) and the call's arguments (``kwargs`` updated in place)."""
        telemetry = self._telemetry or get_telemetry()
        config = runnable_config(args, kwargs)
        # The agent's model is not known before its first call: the first chat call
        # beneath it names it (span attribute and the duration's label).
        invocation = telemetry.agent_run(
            name,
            "",
            conversation_id=_conversation_id(config),
            parent=parent_context(call_callbacks(config)),
        )
        run_id = own_run(config.get("run_id"))
        marker = Recording(
            OP_INVOKE_AGENT,
            run_ids=[run_id],
            span=invocation.span,
            owner=graph,
            agent=name,
            on_chat_model=_FirstModel(invocation).note,
            context=invocation.context,
        )
        return invocation, marker, _with_run_id(args, kwargs, config, run_id)

    def invoke(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        name = _recorded_here(instance, args, kwargs)
        if name is None:
            return wrapped(*args, **kwargs)
        invocation, marker, args = self._start(name, instance, args, kwargs)
        with Recorded(invocation, marker):
            return wrapped(*args, **kwargs)

    async def ainvoke(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        name = _recorded_here(instance, args, kwargs)
        if name is None:
            return await wrapped(*args, **kwargs)
        invocation, marker, args = self._start(name, instance, args, kwargs)
        with Recorded(invocation, marker):
            return await wrapped(*args, **kwargs)

    def stream(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Iterator[Any]:
        name = _recorded_here(instance, args, kwargs)
        if name is None:
            stream: Iterator[Any] = wrapped(*args, **kwargs)
            return stream
        return self._stream(name, wrapped, instance, args, kwargs)

    def _stream(
        self,
        name: str,
        wrapped: Wrapped,
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Iterator[Any]:
        invocation, marker, args = self._start(name, instance, args, kwargs)
        # A consumer that stops reading early stopped the run: it did not complete.
        yield from instrument_iter(
            invocation,
            marked_iter(opened(marker, lambda: wrapped(*args, **kwargs)), marker),
            closed_early=OUTCOME_CANCELLED,
        )

    def astream(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        name = _recorded_here(instance, args, kwargs)
        if name is None:
            stream: AsyncIterator[Any] = wrapped(*args, **kwargs)
            return stream
        return self._astream(name, wrapped, instance, args, kwargs)

    async def _astream(
        self,
        name: str,
        wrapped: Wrapped,
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> AsyncIterator[Any]:
        invocation, marker, args = self._start(name, instance, args, kwargs)
        items = instrument_stream(
            invocation,
            marked_aiter(opened(marker, lambda: wrapped(*args, **kwargs)), marker),
            closed_early=OUTCOME_CANCELLED,
        )
        async with aclosing(items):
            async for item in items:
                yield item
