"""The tool seam: any LangChain tool's call is an ``execute_tool`` span, and registered
tools as LangChain tools.

``ToolBoundary`` wraps ``BaseTool.run`` / ``arun`` — the boundary every tool call of an
agent crosses (``invoke``, ``ainvoke`` and LangGraph's ``ToolNode`` all reach it) — as
wrapt-style wrappers: the instrumentor installs them on ``BaseTool``,
``InstrumentedTool.arun`` calls the same one. The span (with the model's tool-call id
and the name of the agent whose run it is) is current while the tool runs. A tool whose
error LangChain handles (``handle_tool_error``: the model sees a message) fails its span
all the same: our tools with the error's cause, any other with ``ToolReportedError``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from langchain_core.tools import StructuredTool, ToolException
from pydantic import Field, ValidationError

from agentwatch.telemetry import AgentwatchError, Telemetry, ToolCallInvocation, get_telemetry
from agentwatch.telemetry.names import OP_EXECUTE_TOOL

from ..retry import Retrier, RetryPolicy
from ..tools.registry import ToolRegistry, ToolSpec
from .recording import Recorded, Recording, current_agent, own_run, parent_context, within_run

_current: ContextVar[ToolCallInvocation | None] = ContextVar("agentwatch_tool", default=None)


class ToolReportedError(Exception):
    """A tool answered with an error message (LangChain's handled tool error)."""


def tool_result(output: Any) -> str:
    """A tool's result as the model sees it (a ``ToolMessage``'s content), for spans."""
    return str(getattr(output, "content", output))


class ToolBoundary:
    """A tool call's recorded boundary, recording into ``telemetry`` (None: the
    process's, looked up at each call) under ``agent_name`` (None: the agent whose run
    this is, from the enclosing ``invoke_agent``)."""

    __slots__ = ("_agent", "_telemetry")

    def __init__(self, telemetry: Telemetry | None = None, agent_name: str | None = None) -> None:
        self._telemetry = telemetry
        self._agent = agent_name

    def run(
        self,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if within_run(instance, kwargs.get("run_id")):
            return wrapped(*args, **kwargs)
        invocation, marker, capturing = self._start(instance, args, kwargs)
        with _Recorded(invocation, marker):
            output = wrapped(*args, **kwargs)
            _finish(invocation, output, capturing)
        return output

    async def arun(
        self,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if within_run(instance, kwargs.get("run_id")):
            return await wrapped(*args, **kwargs)
        invocation, marker, capturing = self._start(instance, args, kwargs)
        with _Recorded(invocation, marker):
            output = await wrapped(*args, **kwargs)
            _finish(invocation, output, capturing)
        return output

    def _start(
        self, tool: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[ToolCallInvocation, Recording, bool]:
        telemetry = self._telemetry or get_telemetry()
        agent = current_agent() if self._agent is None else self._agent
        callbacks = args[4] if len(args) > 4 else kwargs.get("callbacks")
        invocation = telemetry.tool_call(
            str(tool.name),
            agent_name=agent,
            call_id=kwargs.get("tool_call_id"),
            parent=parent_context(callbacks),
        )
        capturing = telemetry.capturing
        if capturing:
            given = args[0] if args else kwargs.get("tool_input")
            invocation.capture(arguments=json.dumps(given, default=str))
        # The tool's LangChain run under an id of its own, so that the marker claims that
        # run and no other (a tool run in this one's body is not this call).
        run_id = kwargs["run_id"] = own_run(kwargs.get("run_id"))
        marker = Recording(OP_EXECUTE_TOOL, run_ids=[run_id], span=invocation.span, owner=tool)
        return invocation, marker, capturing


class _Recorded(Recorded[ToolCallInvocation]):
    """The tool call's span and marker, and the call for our tools' error handlers."""

    __slots__ = ("_tool",)

    def __enter__(self) -> ToolCallInvocation:
        self._tool = _current.set(self._invocation)
        return super().__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            super().__exit__(exc_type, exc, tb)
        finally:
            _current.reset(self._tool)


def _finish(invocation: ToolCallInvocation, output: Any, capturing: bool) -> None:
    if capturing:  # a no-op when the tool already failed
        invocation.capture(result=tool_result(output))
    if getattr(output, "status", None) == "error":  # handled: a no-op when failed already
        invocation.fail(ToolReportedError(tool_result(output)))


def error_text(name: str, timeout: float, exc: BaseException, *, validates: bool = True) -> str:
    """What the model is told of a call of tool ``name`` that raised ``exc``
    (``validates``: the tool checks its arguments itself, so a ``ValidationError`` is
    about them; otherwise it came from the tool's own work)."""
    if isinstance(exc, TimeoutError):
        return f"{name} timed out after {timeout:g} s"
    if validates and isinstance(exc, ValidationError):
        return invalid_arguments(exc)
    if isinstance(exc, AgentwatchError | ToolException):
        return str(exc)
    return f"{name} failed: {type(exc).__name__}: {exc}"


def invalid_arguments(error: ValidationError | Any) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
        for e in getattr(error, "errors", list)()
    )
    return f"invalid arguments ({problems or error})"


def fail_call(exc: BaseException, message: str) -> str:
    """The tool call being recorded here failed with ``exc``; ``message`` (what the
    model is told) is its result."""
    invocation = _current.get()
    if invocation is not None:
        invocation.capture(result=message)  # before it ends: an ended span takes nothing
        invocation.fail(exc)
    return message


def _tool_error(error: ToolException) -> str:
    cause = error.__cause__ if isinstance(error.__cause__, BaseException) else error
    return fail_call(cause, f"Error: {error}")


def _validation_error(error: ValidationError | Any) -> str:
    return fail_call(error, f"Error: {invalid_arguments(error)}")


class InstrumentedTool(StructuredTool):
    """A ``StructuredTool`` whose every call is recorded by agentwatch."""

    telemetry: Any = Field(default=None, exclude=True)
    agent_name: str = Field(default="", exclude=True)

    async def arun(self, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        boundary = ToolBoundary(self.telemetry, self.agent_name or None)
        return await boundary.arun(super().arun, self, (tool_input, *args), kwargs)


def _coroutine(spec: ToolSpec, retrier: Retrier | None) -> Any:
    async def attempt(kwargs: dict[str, Any]) -> str:
        async with asyncio.timeout(spec.timeout):  # per attempt
            return await spec.func(**kwargs)

    async def run(**kwargs: Any) -> str:
        try:
            if retrier is None:
                return await attempt(kwargs)
            return await retrier.call(OP_EXECUTE_TOOL, lambda: attempt(kwargs))
        except ToolException:
            raise
        except Exception as exc:
            # Arguments were checked before the call: a ValidationError is the tool's own.
            text = error_text(spec.name, spec.timeout, exc, validates=False)
            raise ToolException(text) from exc

    return run


def langchain_tools(
    registry: ToolRegistry,
    telemetry: Telemetry,
    agent_name: str,
    retry_policy: RetryPolicy | None = None,
) -> list[InstrumentedTool]:
    """Our tools as LangChain tools; those registered with ``retry=True`` retry
    transient failures under ``retry_policy``."""
    telemetry.tools.declare(registry.names())
    retrier = Retrier(retry_policy, telemetry) if retry_policy is not None else None
    return [
        InstrumentedTool(
            name=spec.name,
            description=spec.description,
            args_schema=spec.args_schema,
            coroutine=_coroutine(spec, retrier if spec.retry else None),
            handle_tool_error=_tool_error,
            handle_validation_error=_validation_error,
            telemetry=telemetry,
            agent_name=agent_name,
        )
        for spec in registry
    ]
