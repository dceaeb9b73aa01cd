"""Bring your own tools and model: a user's LangChain tools (``@tool``, ``StructuredTool``,
any ``BaseTool``) and chat model (any ``BaseChatModel``) run in agentwatch's Agent as they
are, with the same spans, metrics, timeouts, retries and error messages as its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import aclosing
from typing import Annotated, Any

import pytest
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import (
    BaseTool,
    InjectedToolCallId,
    StructuredTool,
    ToolException,
    tool,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field

from agentwatch.runtime import (
    Agent,
    AgentRuntime,
    AgentwatchInstrumentor,
    InstrumentedChatModel,
    RetryPolicy,
    RuntimeSettings,
    ToolSpec,
)
from agentwatch.runtime.builtin_model import Reply, ToolCall
from agentwatch.runtime.builtin_model.in_process import BuiltinChatModel
from agentwatch.runtime.events import RunFinished
from agentwatch.telemetry import ConfigurationError, Telemetry


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class OrderArgs(BaseModel):
    order_id: int


async def lookup(order_id: int) -> str:
    return f"order {order_id}: shipped"


lookup_order = StructuredTool.from_function(
    coroutine=lookup, name="lookup_order", description="An order's status.", args_schema=OrderArgs
)


def calls(*called: tuple[str, str]) -> Reply:
    """A model reply calling tools: (name, JSON arguments) each."""
    return Reply("", tuple(ToolCall(f"call_{name}", name, args) for name, args in called))


class InstrumentedBuiltin(InstrumentedChatModel, BuiltinChatModel):
    pass


def scripted(telemetry: Telemetry, *replies: Reply | str) -> BuiltinChatModel:
    return InstrumentedBuiltin(
        script=list(replies), telemetry=telemetry, provider_name="agentwatch"
    )


def spans_by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def tool_count(registry: CollectorRegistry, tool_name: str, error_type: str = "") -> float | None:
    return registry.get_sample_value(
        "gen_ai_execute_tool_duration_seconds_count",
        {"gen_ai_tool_name": tool_name, "gen_ai_agent_name": "shop", "error_type": error_type},
    )


async def test_a_users_tool_and_structured_tool_run_as_ours(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    model = scripted(
        telemetry,
        calls(("get_weather", '{"city": "Paris"}'), ("lookup_order", '{"order_id": 42}')),
        "Sunny, and your order shipped.",
    )
    agent = Agent(
        model,
        [get_weather, lookup_order],
        telemetry=telemetry,
        model_name="agentwatch-builtin",
        name="shop",
    )
    result = await agent.arun("weather in Paris, and order 42?")

    assert result.output == "Sunny, and your order shipped."
    assert [(c.name, c.result, c.error) for c in result.tool_calls] == [
        ("get_weather", "sunny in Paris", False),
        ("lookup_order", "order 42: shipped", False),
    ]
    spans = spans_by_name(exporter)
    root = spans["invoke_agent shop"]
    for name in ("execute_tool get_weather", "execute_tool lookup_order"):
        span = spans[name]
        assert span.parent is not None
        assert span.parent.span_id == root.context.span_id
        assert span.context.trace_id == root.context.trace_id
        assert (span.attributes or {})["gen_ai.tool.call.id"].startswith("call_")
    chats = [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]
    assert len(chats) == 2  # the user's model, recorded too
    assert tool_count(registry, "get_weather") == 1
    assert tool_count(registry, "lookup_order") == 1


class FlakyError(ConnectionError):
    pass


async def test_a_users_tool_gets_the_timeout_retries_and_error_messages(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    attempts: list[str] = []

    @tool
    async def flaky(city: str) -> str:
        """Fails once, then answers."""
        attempts.append(city)
        if len(attempts) == 1:
            raise FlakyError("connection reset")
        return "ok"

    @tool
    async def broken(city: str) -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    @tool
    async def slow(city: str) -> str:
        """Never answers."""
        await asyncio.Event().wait()
        return ""

    model = scripted(
        telemetry,
        calls(("flaky", '{"city": "Oslo"}'), ("broken", '{"city": "Oslo"}')),
        calls(("slow", '{"city": "Oslo"}'), ("get_weather", '{"town": "Oslo"}')),
        "done",
    )
    tools = [
        ToolSpec.from_tool(flaky, retry=True),
        broken,
        ToolSpec.from_tool(slow, timeout=0.2),
        get_weather,
    ]
    quick = RetryPolicy(base_delay=0.001, max_delay=0.001)
    agent = Agent(
        model,
        tools,
        telemetry=telemetry,
        model_name="agentwatch-builtin",
        name="shop",
        retry_policy=quick,
    )
    result = await agent.arun("go")

    assert result.output == "done"  # every failure was a message the model saw
    seen = {c.name: c for c in result.tool_calls}
    assert (seen["flaky"].result, seen["flaky"].error) == ("ok", False)
    assert attempts == ["Oslo", "Oslo"]
    assert seen["broken"].result == "Error: broken failed: RuntimeError: disk on fire"
    assert seen["slow"].result == "Error: slow timed out after 0.2 s"
    assert seen["get_weather"].result.startswith("Error: invalid arguments (city: Field required")
    assert all(seen[n].error for n in ("broken", "slow", "get_weather"))
    spans = spans_by_name(exporter)
    for name, error_type in [
        ("broken", "RuntimeError"),
        ("slow", "TimeoutError"),
        ("get_weather", "ValidationError"),
    ]:
        span = spans[f"execute_tool {name}"]
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == error_type
        assert tool_count(registry, name, error_type) == 1
    assert spans["invoke_agent shop"].status.status_code is StatusCode.UNSET
    assert tool_count(registry, "flaky") == 1
    retried = {"operation": "execute_tool", "outcome": "retry"}
    assert registry.get_sample_value("agentwatch_retry_attempts_total", retried) == 1


async def test_a_users_tool_keeps_its_own_ways(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """Injected arguments, artifacts and the tool's own error handling stay the tool's."""

    class Fetch(BaseTool):
        name: str = "fetch"
        description: str = "Fetch a page (an MCP-style tool: a JSON schema, content and artifact)."
        args_schema: Any = Field(
            default_factory=lambda: {
                "type": "object",
                "properties": {"url": {"type": "string"}},
                "required": ["url"],
            }
        )
        response_format: Any = "content_and_artifact"

        def _run(self, url: str) -> tuple[str, dict[str, str]]:
            return f"page at {url}", {"raw": "<html/>"}

    @tool
    def whoami(tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """The id of this call."""
        return f"I am {tool_call_id}"

    def refuse(city: str) -> str:
        raise ToolException(f"no {city}")

    picky = StructuredTool.from_function(
        refuse, name="picky", description="Refuses every city.", handle_tool_error=True
    )

    model = scripted(
        telemetry,
        calls(("fetch", '{"url": "http://x"}'), ("whoami", "{}"), ("picky", '{"city": "Rome"}')),
        "done",
    )
    agent = Agent(
        model,
        [Fetch(), whoami, picky],
        telemetry=telemetry,
        model_name="agentwatch-builtin",
        name="shop",
    )
    state = await agent.graph.ainvoke({"messages": [{"role": "user", "content": "go"}]})
    answers = {m.name: m for m in state["messages"] if isinstance(m, ToolMessage)}
    assert answers["fetch"].content == "page at http://x"
    assert answers["fetch"].artifact == {"raw": "<html/>"}
    assert answers["whoami"].content == f"I am {answers['whoami'].tool_call_id}"
    assert answers["picky"].content == "no Rome"
    spans = spans_by_name(exporter)
    assert spans["execute_tool fetch"].status.status_code is StatusCode.UNSET
    assert spans["execute_tool picky"].status.status_code is StatusCode.ERROR  # it said so


class ProviderChat(GenericFakeChatModel):
    """A user's own chat model class (a provider agentwatch knows nothing of)."""

    model_name: str = "provider-large"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self


def replies(*messages: AIMessage) -> Iterator[AIMessage]:
    return iter(messages)


async def test_a_users_chat_model_is_recorded_and_left_as_it_is(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    call = {"name": "get_weather", "args": {"city": "Lima"}, "id": "c1", "type": "tool_call"}
    model = ProviderChat(messages=replies(AIMessage("", tool_calls=[call]), AIMessage("Sunny.")))
    agent = Agent(model, [get_weather], telemetry=telemetry, name="shop")
    result = await agent.arun("weather in Lima?")

    assert result.output == "Sunny."
    assert type(model) is ProviderChat  # the user's instance is not changed
    assert not isinstance(model, InstrumentedChatModel)
    assert isinstance(agent.model, InstrumentedChatModel)
    assert isinstance(agent.model, ProviderChat)
    assert agent.model_name == "provider-large"
    names = [s.name for s in exporter.get_finished_spans()]
    assert names.count("chat provider-large") == 2
    assert names[-1] == "invoke_agent shop"
    agent_labels = {"gen_ai_agent_name": "shop", "gen_ai_request_model": "provider-large"}
    assert (
        registry.get_sample_value(
            "gen_ai_invoke_agent_duration_seconds_count", {**agent_labels, "error_type": ""}
        )
        == 1
    )


async def test_a_model_instrumented_already_is_not_recorded_twice(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    model = InstrumentedBuiltin(telemetry=telemetry, provider_name="agentwatch")
    agent = Agent(model, [], telemetry=telemetry, name="shop")
    assert agent.model is model
    await agent.arun("hello")
    assert [s.name for s in exporter.get_finished_spans()] == [
        "chat agentwatch-builtin",
        "invoke_agent shop",
    ]


def test_what_is_not_a_chat_model_is_refused(telemetry: Telemetry) -> None:
    with pytest.raises(ConfigurationError, match="a LangChain chat model"):
        Agent(BuiltinChatModel().bind_tools([get_weather]), [], telemetry=telemetry)  # type: ignore[arg-type]


async def test_the_runtime_runs_a_users_model_and_tools(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    model = BuiltinChatModel(script=[calls(("get_weather", '{"city": "Rome"}')), "Sunny in Rome."])
    async with AgentRuntime(
        RuntimeSettings(), telemetry, model=model, tools=[get_weather], agent_name="shop"
    ) as runtime:
        assert runtime.model_server is None  # no builtin model started for nothing
        result = await runtime.agent.arun("weather in Rome?")
    assert result.output == "Sunny in Rome."
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [
        "chat agentwatch-builtin",
        "execute_tool get_weather",
        "chat agentwatch-builtin",
        "invoke_agent shop",
    ]
    assert (spans[0].attributes or {})["gen_ai.provider.name"] == "agentwatch"  # its own metadata


async def test_with_the_instrumentor_installed_too_nothing_is_recorded_twice(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """The agent's own boundaries record its run, the user's model and tools; the
    instrumentor's wrappers of the same graph, model and tools pass the calls through."""
    expected = [
        "chat agentwatch-builtin",
        "execute_tool get_weather",
        "execute_tool lookup_order",
        "chat agentwatch-builtin",
        "invoke_agent shop",
    ]
    instrumentor = AgentwatchInstrumentor()
    instrumentor.instrument(telemetry=telemetry)
    try:
        for streamed in (False, True):
            exporter.clear()
            model = BuiltinChatModel(  # the user's: not instrumented itself
                script=[
                    calls(("get_weather", '{"city": "Lima"}'), ("lookup_order", '{"order_id": 7}')),
                    "Sunny.",
                ]
            )
            agent = Agent(model, [get_weather, lookup_order], telemetry=telemetry, name="shop")
            if streamed:
                async with aclosing(agent.astream("weather in Lima?")) as events:
                    async for _ in events:
                        pass
            else:
                await agent.arun("weather in Lima?")
            assert sorted(s.name for s in exporter.get_finished_spans()) == sorted(expected)
    finally:
        instrumentor.uninstrument()


class PlainChat(BaseChatModel):
    """A user's model that cannot stream (``_generate`` only)."""

    @property
    def _llm_type(self) -> str:
        return "plain"

    def _generate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage("A plain answer."))])


async def test_a_users_model_that_cannot_stream_answers_streamed_runs_too(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    agent = Agent(PlainChat(), [], telemetry=telemetry, name="shop")
    async with aclosing(agent.astream("hello")) as events:
        last = [event async for event in events][-1]
    assert isinstance(last, RunFinished)
    assert last.result.output == "A plain answer."
    assert (await agent.arun("hello")).output == "A plain answer."
    assert [s.name for s in exporter.get_finished_spans()] == ["chat", "invoke_agent shop"] * 2


class InstrumentedPlainChat(InstrumentedChatModel, PlainChat):
    """The mixin put first by hand on a model that cannot stream."""


async def test_the_mixin_on_a_model_that_cannot_stream_streams_as_the_model_does(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    model = InstrumentedPlainChat(telemetry=telemetry)
    chunks = [chunk async for chunk in model.astream("hello")]
    assert [chunk.text for chunk in chunks] == ["A plain answer."]
    assert [s.name for s in exporter.get_finished_spans()] == ["chat"]
