"""The tool seam: registered tools as LangChain tools, each call an ``execute_tool`` span.

``InstrumentedTool.arun`` — the boundary every tool call of an agent crosses — opens
the span (with the model's tool-call id) and keeps it current while the tool runs. A
tool that raises, times out or gets invalid arguments fails its span and returns an
error message the model sees (LangChain's ``handle_tool_error``); the run goes on.
"""

from __future__ import annotations

import asyncio
import json
from contextvars import ContextVar
from typing import Any

from langchain_core.tools import StructuredTool, ToolException
from pydantic import Field, ValidationError

from agentwatch.telemetry import AgentwatchError, Telemetry, ToolCallInvocation
from agentwatch.telemetry.names import OP_EXECUTE_TOOL

from ..retry import Retrier, RetryPolicy
from ..tools.registry import ToolRegistry, ToolSpec

_current: ContextVar[ToolCallInvocation | None] = ContextVar("agentwatch_tool", default=None)


def tool_result(output: Any) -> str:
    """A tool's result as the model sees it (a ``ToolMessage``'s content), for spans."""
    return str(getattr(output, "content", output))


def _failed(exc: BaseException, message: str) -> str:
    invocation = _current.get()
    if invocation is not None:
        invocation.capture(result=message)  # before it ends: an ended span takes nothing
        invocation.fail(exc)
    return message


def _tool_error(error: ToolException) -> str:
    cause = error.__cause__ if isinstance(error.__cause__, BaseException) else error
    return _failed(cause, f"Error: {error}")


def _validation_error(error: ValidationError | Any) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
        for e in getattr(error, "errors", list)()
    )
    return _failed(error, f"Error: invalid arguments ({problems or error})")


class InstrumentedTool(StructuredTool):
    """A ``StructuredTool`` whose every call is recorded by agentwatch."""

    telemetry: Any = Field(default=None, exclude=True)
    agent_name: str = Field(default="", exclude=True)

    async def arun(self, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        telemetry: Telemetry = self.telemetry
        invocation = telemetry.tool_call(
            self.name, agent_name=self.agent_name, call_id=kwargs.get("tool_call_id")
        )
        capturing = telemetry.capturing
        if capturing:
            invocation.capture(arguments=json.dumps(tool_input, default=str))
        token = _current.set(invocation)
        try:
            with invocation:
                output = await super().arun(tool_input, *args, **kwargs)
                if capturing:  # a no-op when the tool already failed
                    invocation.capture(result=tool_result(output))
        finally:
            _current.reset(token)
        return output


def _coroutine(spec: ToolSpec, retrier: Retrier | None) -> Any:
    async def attempt(kwargs: dict[str, Any]) -> str:
        async with asyncio.timeout(spec.timeout):  # per attempt
            return await spec.func(**kwargs)

    async def run(**kwargs: Any) -> str:
        try:
            if retrier is None:
                return await attempt(kwargs)
            return await retrier.call(OP_EXECUTE_TOOL, lambda: attempt(kwargs))
        except TimeoutError as exc:
            raise ToolException(f"{spec.name} timed out after {spec.timeout:g} s") from exc
        except AgentwatchError as exc:
            raise ToolException(str(exc)) from exc
        except ToolException:
            raise
        except Exception as exc:
            raise ToolException(f"{spec.name} failed: {type(exc).__name__}: {exc}") from exc

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
