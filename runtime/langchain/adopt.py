"""Users' own LangChain tools and chat models inside agentwatch's agent, recorded as ours.

``agent_tools`` gives an agent its registry's tools: a ``ToolSpec`` of ours as
``InstrumentedTool`` (``tools.py``), a user's LangChain tool (``ToolSpec.from_tool``:
``@tool`` functions, ``StructuredTool``, any ``BaseTool``, MCP tools) as ``ObservedTool``.
The user's tool runs as it is — its own argument parsing, injected arguments (state,
runtime, tool-call id), artifacts and ``Command`` results — inside the same
``execute_tool`` span, under the spec's timeout and retry, and whatever it raises
becomes an error message the model sees (the run goes on), as with our own tools.

``adopt_model`` records a user's chat model (any ``BaseChatModel``) as
``InstrumentedChatModel`` does: a model already instrumented is used as it is (never
two spans for one call); any other is copied, the copy's class putting
``InstrumentedChatModel`` first, so the user's own instance is left untouched.
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langgraph.errors import GraphBubbleUp
from pydantic import Field

from agentwatch.telemetry import ConfigurationError, Telemetry
from agentwatch.telemetry.names import OP_EXECUTE_TOOL

from ..retry import Retrier, RetryPolicy
from ..tools.registry import ToolRegistry, ToolSpec
from .chat_model import InstrumentedChatModel
from .recording import another_run
from .tools import ToolBoundary, ToolReportedError, error_text, fail_call, langchain_tools

__all__ = ["ObservedTool", "ToolReportedError", "adopt_model", "agent_tools", "error_text"]


def agent_tools(
    registry: ToolRegistry,
    telemetry: Telemetry,
    agent_name: str,
    retry_policy: RetryPolicy | None = None,
) -> list[BaseTool]:
    """Every registered tool as the LangChain tool the agent runs, in the registry's
    order; those registered with ``retry=True`` retry under ``retry_policy``."""
    ours = iter(
        langchain_tools(
            ToolRegistry([spec for spec in registry if spec.tool is None]),
            telemetry,
            agent_name,
            retry_policy,
        )
    )
    telemetry.tools.declare(registry.names())
    retrier = Retrier(retry_policy, telemetry) if retry_policy is not None else None
    return [
        next(ours)
        if spec.tool is None
        else ObservedTool.of(spec, telemetry, agent_name, retrier if spec.retry else None)
        for spec in registry
    ]


class ObservedTool(BaseTool):
    """A user's LangChain tool as the agent runs it: the same name, description and
    schema; each call the tool's own ``arun`` inside an ``execute_tool`` span."""

    tool: BaseTool = Field(exclude=True)
    telemetry: Any = Field(default=None, exclude=True)
    agent_name: str = Field(default="", exclude=True)
    timeout: float = Field(default=10.0, exclude=True)
    retrier: Any = Field(default=None, exclude=True)

    @classmethod
    def of(
        cls, spec: ToolSpec, telemetry: Telemetry, agent_name: str, retrier: Retrier | None
    ) -> ObservedTool:
        tool = spec.tool
        if tool is None:
            raise ValueError(f"tool {spec.name!r} is not a LangChain tool (ToolSpec.from_tool)")
        return cls(
            name=tool.name,
            description=tool.description,
            args_schema=tool.args_schema,
            return_direct=tool.return_direct,
            response_format=tool.response_format,
            extras=tool.extras,
            tool=tool,
            telemetry=telemetry,
            agent_name=agent_name,
            timeout=spec.timeout,
            retrier=retrier,
        )

    # What LangChain and LangGraph read of a tool (the model's schema, injected
    # arguments) is the user's tool's own.
    @property
    def tool_call_schema(self) -> Any:
        return self.tool.tool_call_schema

    def get_input_schema(self, config: Any = None) -> Any:
        return self.tool.get_input_schema(config)

    @property
    def func(self) -> Any:
        return getattr(self.tool, "func", None) or getattr(self.tool, "coroutine", None)

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("agentwatch's agent runs its tools asynchronously")

    async def arun(self, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        # The boundary our tools and the instrumentor share, owned by the user's tool: with
        # the instrumentor installed too, its wrapper of the tool's arun passes through.
        boundary = ToolBoundary(self.telemetry, self.agent_name or None)
        return await boundary.arun(self._guarded, self.tool, (tool_input, *args), kwargs)

    async def _guarded(self, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        """The call, whatever it raises turned into the message the model sees (the
        call's span failed with it), as our own tools' errors are."""
        try:
            return await self._attempts(tool_input, args, kwargs)
        except GraphBubbleUp:  # LangGraph's interrupt(): not a failure, the graph's to handle
            raise
        except Exception as exc:
            message = fail_call(exc, f"Error: {error_text(self.name, self.timeout, exc)}")
            call_id = kwargs.get("tool_call_id")
            if call_id is None:
                return message
            return ToolMessage(message, name=self.name, tool_call_id=call_id, status="error")

    async def _attempts(
        self, tool_input: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """The tool's own ``arun`` under the timeout, each attempt when it retries (a
        later attempt is a new LangChain run, under a new ``run_id`` of this call's)."""
        attempts = 0

        async def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            given = kwargs if attempts == 1 else {**kwargs, "run_id": another_run()}
            async with asyncio.timeout(self.timeout):
                return await self.tool.arun(tool_input, *args, **given)

        if self.retrier is None:
            return await attempt()
        retrier: Retrier = self.retrier
        return await retrier.call(OP_EXECUTE_TOOL, attempt)


def adopt_model(
    model: BaseChatModel, telemetry: Telemetry, retry_policy: RetryPolicy | None = None
) -> InstrumentedChatModel:
    """``model``, every call recorded into ``telemetry`` (retried under ``retry_policy``:
    then set the client's own retries to 0, so that every attempt is ours and visible)."""
    if isinstance(model, InstrumentedChatModel):
        return model
    if not isinstance(model, BaseChatModel):
        raise ConfigurationError(
            f"the model must be a LangChain chat model (a BaseChatModel), got "
            f"{type(model).__name__}: give the model itself, not a chain or a binding"
        )
    copy = model.model_copy()  # shallow: the same clients, the user's instance untouched
    instrumented = _instrumented(type(model))
    object.__setattr__(copy, "__class__", instrumented)
    for name, info in instrumented.model_fields.items():  # the mixin's fields, at their default
        if name not in copy.__dict__:
            copy.__dict__[name] = info.get_default(call_default_factory=True)
    copy.__dict__.update(telemetry=telemetry, retry_policy=retry_policy)
    return cast(InstrumentedChatModel, copy)  # its class, switched above


@cache
def _instrumented(cls: type[BaseChatModel]) -> type[InstrumentedChatModel]:
    """``cls`` with ``InstrumentedChatModel`` first among its bases (one per class)."""
    return type(f"Instrumented{cls.__name__}", (InstrumentedChatModel, cls), {})
