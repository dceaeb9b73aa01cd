"""AgentwatchInstrumentor: users' own LangChain / LangGraph code, recorded as our Agent is."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import StructuredTool, ToolException, tool
from langgraph.graph import END, START, MessagesState, StateGraph
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from agentwatch.runtime import (
    AgentwatchCallbackHandler,
    AgentwatchInstrumentor,
    BuiltinChatModel,
    InstrumentedChatModel,
    ToolRegistry,
    ToolSpec,
)
from agentwatch.runtime.builtin_model import Reply, ToolCall
from agentwatch.runtime.langchain.tools import langchain_tools
from agentwatch.telemetry import Telemetry
from agentwatch.telemetry import setup as telemetry_setup
from tests.helpers import time_bound

QUESTION = {"messages": [{"role": "user", "content": "Are socks in stock?"}]}


@tool
def lookup(item: str) -> str:
    """Look an item up in the shop's stock."""
    return f"{item}: in stock"


def scripted() -> BuiltinChatModel:
    """One tool call, then the answer."""
    return BuiltinChatModel(
        script=[
            Reply("", (ToolCall("", "lookup", '{"item": "socks"}'),)),
            "Socks are in stock.",
        ]
    )


def parent_of(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    return next((s for s in spans if s.context.span_id == span.parent.span_id), None)


def tree(spans: Sequence[ReadableSpan]) -> list[tuple[str, str | None]]:
    """(span, its parent's name) in start order."""
    ordered = sorted(spans, key=lambda s: s.start_time or 0)
    return [(s.name, getattr(parent_of(s, spans), "name", None)) for s in ordered]


def tool_count(registry: CollectorRegistry, tool_name: str, agent: str, error: str = "") -> Any:
    return registry.get_sample_value(
        "gen_ai_execute_tool_duration_seconds_count",
        {"gen_ai_tool_name": tool_name, "gen_ai_agent_name": agent, "error_type": error},
    )


class Stock(BaseModel):
    item: str
    in_stock: bool


SHOP_TREE = [
    ("invoke_agent shop", None),
    ("chat agentwatch-builtin", "invoke_agent shop"),
    ("execute_tool lookup", "invoke_agent shop"),
    ("chat agentwatch-builtin", "invoke_agent shop"),
]


@pytest.mark.usefixtures("instrumented")
async def test_a_named_agent_is_one_trace_of_its_chat_and_tool_spans(
    exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    agent = create_agent(scripted(), tools=[lookup], name="shop")
    result = await agent.ainvoke(QUESTION)
    assert result["messages"][-1].content == "Socks are in stock."
    spans = exporter.get_finished_spans()
    assert tree(spans) == SHOP_TREE
    assert len({s.context.trace_id for s in spans}) == 1
    chat = next(s for s in spans if s.name.startswith("chat"))
    attributes = dict(chat.attributes or {})
    assert attributes["gen_ai.provider.name"] == "agentwatch"
    assert attributes["gen_ai.usage.output_tokens"] > 0
    agent_span = next(s for s in spans if s.name == "invoke_agent shop")
    assert (agent_span.attributes or {})["gen_ai.request.model"] == "agentwatch-builtin"
    assert "gen_ai.input.messages" not in attributes  # content capture is opt-in
    assert tool_count(registry, "lookup", "shop") == 1
    duration = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "agentwatch",
        "gen_ai_request_model": "agentwatch-builtin",
        "error_type": "",
    }
    name = "gen_ai_client_operation_duration_seconds_count"
    assert registry.get_sample_value(name, duration) == 2
    runs = {
        "gen_ai_agent_name": "shop",
        "gen_ai_request_model": "agentwatch-builtin",
        "error_type": "",
    }
    assert registry.get_sample_value("gen_ai_invoke_agent_duration_seconds_count", runs) == 1


@pytest.mark.usefixtures("instrumented")
def test_sync_invoke_gives_the_same_trace(
    exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    agent = create_agent(scripted(), tools=[lookup], name="shop")
    agent.invoke(QUESTION)
    spans = exporter.get_finished_spans()
    assert tree(spans) == SHOP_TREE
    assert len({s.context.trace_id for s in spans}) == 1
    assert tool_count(registry, "lookup", "shop") == 1


def test_uninstrument_restores_everything(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    before = (BaseChatModel.generate, BaseChatModel.astream)
    instrumentor = AgentwatchInstrumentor()
    instrumentor.instrument(telemetry=telemetry)
    instrumentor.uninstrument()
    assert (BaseChatModel.generate, BaseChatModel.astream) == before
    agent = create_agent(scripted(), tools=[lookup], name="shop")
    agent.invoke(QUESTION)
    assert exporter.get_finished_spans() == ()


def test_the_entry_point_is_discoverable() -> None:
    (entry,) = [
        e
        for e in importlib.metadata.entry_points(group="opentelemetry_instrumentor")
        if e.value.startswith("agentwatch")
    ]
    assert entry.name == "agentwatch"
    assert entry.load() is AgentwatchInstrumentor


@pytest.mark.usefixtures("instrumented")
async def test_a_graph_without_a_name_of_its_own_is_no_agent(
    exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    agent = create_agent(scripted(), tools=[lookup])  # LangGraph names it "LangGraph"
    await agent.ainvoke(QUESTION)
    names = [name for name, _ in tree(exporter.get_finished_spans())]
    assert names == ["chat agentwatch-builtin", "execute_tool lookup", "chat agentwatch-builtin"]
    assert tool_count(registry, "lookup", "") == 1


@pytest.mark.usefixtures("instrumented")
async def test_a_model_called_directly_is_one_chat_span_per_call(
    exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    model = BuiltinChatModel()
    model.invoke("hello")
    await model.ainvoke("hello")
    model.bind_tools([lookup]).invoke("lookup socks")
    await model.with_structured_output(Stock).ainvoke("are socks in stock?")
    model.batch(["one", "two"])
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["chat agentwatch-builtin"] * 6


@tool
def write_note(text: str) -> str:
    """Write a note for the customer."""
    return "noted"


def supervisor(capture: bool = False) -> Any:
    """A supervisor graph: two create_agent sub-agents (one as a node, one called from a
    node) and a named sub-graph as a node, each on the builtin model's brain (it calls
    the tool the prompt names), so concurrent runs share one graph."""
    research = create_agent(BuiltinChatModel(), tools=[lookup], name="research")
    writer = create_agent(BuiltinChatModel(), tools=[write_note], name="writer")

    def write(state: MessagesState) -> dict[str, Any]:  # sync: a worker thread under ainvoke
        answer = state["messages"][-1].content
        result = writer.invoke({"messages": [HumanMessage(f"write_note: {answer}")]})
        return {"messages": [result["messages"][-1]]}

    model = BuiltinChatModel()

    async def polish(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"][-1].content)]}

    formatter = (
        StateGraph(MessagesState)
        .add_node("polish", polish)
        .add_edge(START, "polish")
        .add_edge("polish", END)
        .compile(name="formatter")
    )
    return (
        StateGraph(MessagesState)
        .add_node("research", research)
        .add_node("write", write)
        .add_node("format", formatter)
        .add_edge(START, "research")
        .add_edge("research", "write")
        .add_edge("write", "format")
        .add_edge("format", END)
        .compile(name="supervisor")
    )


SUPERVISOR_TREE = {
    ("invoke_agent supervisor", None),
    ("invoke_agent research", "invoke_agent supervisor"),
    ("chat agentwatch-builtin", "invoke_agent research"),
    ("execute_tool lookup", "invoke_agent research"),
    ("invoke_agent writer", "invoke_agent supervisor"),
    ("chat agentwatch-builtin", "invoke_agent writer"),
    ("execute_tool write_note", "invoke_agent writer"),
    ("invoke_agent formatter", "invoke_agent supervisor"),
    ("chat agentwatch-builtin", "invoke_agent formatter"),
}


@pytest.mark.usefixtures("instrumented")
async def test_sub_agents_are_nested_agent_spans_with_their_own_calls(
    exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    await supervisor().ainvoke({"messages": [HumanMessage("lookup socks")]})
    spans = exporter.get_finished_spans()
    assert set(tree(spans)) == SUPERVISOR_TREE
    assert len(spans) == 11  # research and writer: chat, tool, chat each
    assert len({s.context.trace_id for s in spans}) == 1
    assert tool_count(registry, "lookup", "research") == 1
    assert tool_count(registry, "write_note", "writer") == 1


async def test_concurrent_runs_never_cross_parents(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    telemetry = Telemetry(
        tracer_provider=tracer_provider, registry=CollectorRegistry(), capture_content="span"
    )
    instrumentor = AgentwatchInstrumentor()
    instrumentor.instrument(telemetry=telemetry)
    try:
        graph = supervisor()
        runs = 50
        questions = [{"messages": [HumanMessage(f"lookup item{i}")]} for i in range(runs)]
        async with asyncio.timeout(time_bound(30, 120)):
            await asyncio.gather(*(graph.ainvoke(q) for q in questions))
    finally:
        instrumentor.uninstrument()
    spans = exporter.get_finished_spans()
    traces: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        traces.setdefault(span.context.trace_id, []).append(span)
    assert len(traces) == runs
    for trace_spans in traces.values():
        assert set(tree(trace_spans)) == SUPERVISOR_TREE
        assert len(trace_spans) == 11
        # every span's parent is in its own trace, and every call belongs to one query
        assert all(s.parent is None or parent_of(s, trace_spans) for s in trace_spans)
        texts = [str(value) for s in trace_spans for value in (s.attributes or {}).values()]
        assert len({item for text in texts for item in re.findall(r"item\d+", text)}) == 1


@pytest.mark.usefixtures("instrumented")
async def test_a_model_or_tool_that_records_itself_is_recorded_once(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    class Recorded(InstrumentedChatModel, BuiltinChatModel):
        pass

    tools = langchain_tools(echo_registry(), telemetry, "shop")
    agent = create_agent(Recorded(telemetry=telemetry), tools=tools, name="shop")
    await agent.ainvoke({"messages": [HumanMessage("echo hello")]})
    model = Recorded(telemetry=telemetry)
    model.invoke("hi")
    [_ async for _ in model.astream("hi")]
    names = [name for name, _ in tree(exporter.get_finished_spans())]
    assert names == [
        "invoke_agent shop",
        "chat agentwatch-builtin",
        "execute_tool echo",
        "chat agentwatch-builtin",
        "chat agentwatch-builtin",
        "chat agentwatch-builtin",
    ]
    assert tool_count(registry, "echo", "shop") == 1


def echo_registry() -> ToolRegistry:
    class Text(BaseModel):
        text: str

    async def echo(text: str) -> str:
        return text

    return ToolRegistry(
        [ToolSpec(name="echo", description="Repeat the text.", func=echo, args_schema=Text)]
    )


FIRST_CHUNK = "gen_ai_client_operation_time_to_first_chunk_seconds_count"
BUILTIN = {
    "gen_ai_operation_name": "chat",
    "gen_ai_provider_name": "agentwatch",
    "gen_ai_request_model": "agentwatch-builtin",
    "error_type": "",
}


@pytest.mark.usefixtures("instrumented")
async def test_streamed_calls_are_one_span_each_with_chunk_timing(
    exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    model = BuiltinChatModel()
    assert "".join(str(c.content) for c in model.stream("hello"))
    assert [c async for c in model.astream("hello")]
    agent = create_agent(BuiltinChatModel(), tools=[lookup], name="shop")
    # LangGraph streams the model inside the run: chunks announced on the run's manager
    async for _ in agent.astream(
        {"messages": [HumanMessage("lookup socks")]}, stream_mode="messages"
    ):
        pass
    chats = [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]
    assert len(chats) == 4
    assert all((s.attributes or {})["gen_ai.request.stream"] is True for s in chats)
    assert all("gen_ai.response.time_to_first_chunk" in (s.attributes or {}) for s in chats)
    assert registry.get_sample_value(FIRST_CHUNK, BUILTIN) == 4

    stream = model.astream("hello")  # a consumer that stops reading early
    async with aclosing(stream):
        await anext(stream)
    last = exporter.get_finished_spans()[-1]
    assert (last.attributes or {})["agentwatch.outcome"] == "cancelled"


class NoStreaming(BaseChatModel):
    """A model that cannot stream: ``stream()`` falls back to ``invoke``."""

    @property
    def _llm_type(self) -> str:
        return "no-streaming"

    def _generate(self, messages: Any, stop: Any = None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage("hi"))])


@pytest.mark.usefixtures("instrumented")
def test_a_model_that_cannot_stream_is_one_plain_call(exporter: InMemorySpanExporter) -> None:
    assert [c.content for c in NoStreaming().stream("hello")] == ["hi"]
    (chat,) = exporter.get_finished_spans()
    assert chat.name == "chat"  # a model without a name
    assert "gen_ai.request.stream" not in (chat.attributes or {})
    assert (chat.attributes or {})["gen_ai.provider.name"] == "no-streaming"


async def test_content_goes_on_spans_only_when_opted_in(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    telemetry = Telemetry(
        tracer_provider=tracer_provider, registry=CollectorRegistry(), capture_content="span"
    )
    instrumentor = AgentwatchInstrumentor()
    instrumentor.instrument(telemetry=telemetry)
    try:
        await create_agent(scripted(), tools=[lookup], name="shop").ainvoke(QUESTION)
        [_ async for _ in BuiltinChatModel().astream("hello")]
    finally:
        instrumentor.uninstrument()
    spans = {s.name: dict(s.attributes or {}) for s in exporter.get_finished_spans()[::-1]}
    chat = spans["chat agentwatch-builtin"]  # the agent's first
    assert "Are socks in stock?" in str(chat["gen_ai.input.messages"])
    assert "gen_ai.output.messages" in chat
    tool_span = spans["execute_tool lookup"]
    assert json.loads(str(tool_span["gen_ai.tool.call.arguments"])) == {"item": "socks"}
    assert tool_span["gen_ai.tool.call.result"] == "socks: in stock"


@tool
def broken(item: str) -> str:
    """Always fails."""
    raise ValueError("no stock database")


def refuse(item: str) -> str:
    raise ToolException("not for sale")


refusing = StructuredTool.from_function(
    refuse,
    name="refusing",
    description="Fails with a message the model sees.",
    handle_tool_error=True,
)


@pytest.mark.usefixtures("instrumented")
async def test_a_failed_tool_fails_its_span(
    exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    with pytest.raises(ValueError, match="no stock database"):
        await broken.ainvoke({"item": "socks"})
    call = {"name": "refusing", "args": {"item": "socks"}, "id": "call_1", "type": "tool_call"}
    assert refusing.invoke(call).status == "error"  # handled: the model sees the message
    failed, refused = exporter.get_finished_spans()
    assert (failed.attributes or {})["error.type"] == "ValueError"
    assert (refused.attributes or {})["error.type"] == "ToolReportedError"
    assert (refused.attributes or {})["gen_ai.tool.call.id"] == "call_1"
    assert tool_count(registry, "broken", "", "ValueError") == 1
    assert tool_count(registry, "refusing", "", "ToolReportedError") == 1


@pytest.mark.usefixtures("instrumented")
def test_tool_names_past_the_label_limit_are_other_and_samples_carry_exemplars(
    exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    tools = [
        StructuredTool.from_function(lambda: "ok", name=f"tool_{i}", description="A tool.")
        for i in range(65)
    ]
    for each in tools:
        each.invoke({})
    assert exporter.get_finished_spans()[-1].name == "execute_tool tool_64"  # spans keep it
    assert tool_count(registry, "tool_63", "") == 1
    assert tool_count(registry, "tool_64", "") is None
    assert tool_count(registry, "_OTHER", "") == 1

    trace_ids = {format(s.context.trace_id, "032x") for s in exporter.get_finished_spans()}
    (family,) = [m for m in registry.collect() if m.name == "gen_ai_execute_tool_duration_seconds"]
    exemplars = [s.exemplar for s in family.samples if s.exemplar is not None]
    assert exemplars
    assert {e.labels["trace_id"] for e in exemplars} <= trace_ids


def test_instrument_without_arguments_records_into_the_process_telemetry(
    telemetry: Telemetry, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry_setup, "_telemetry", telemetry)  # what setup_telemetry() sets
    instrumentor = AgentwatchInstrumentor()
    instrumentor.instrument()
    try:
        BuiltinChatModel().invoke("hello")
    finally:
        instrumentor.uninstrument()
    assert [s.name for s in exporter.get_finished_spans()] == ["chat agentwatch-builtin"]


APP = """
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.tools import tool
from prometheus_client import REGISTRY

from agentwatch.runtime import BuiltinChatModel


@tool
def lookup(item: str) -> str:
    '''Look an item up.'''
    return "in stock"


agent = create_agent(BuiltinChatModel(), tools=[lookup], name="shop")
agent.invoke({"messages": [{"role": "user", "content": "lookup socks"}]})
labels = {"gen_ai_tool_name": "lookup", "gen_ai_agent_name": "shop", "error_type": ""}
print(type(vars(BaseChatModel)["generate"]).__name__)
print(REGISTRY.get_sample_value("gen_ai_execute_tool_duration_seconds_count", labels))
"""


def test_opentelemetry_instrument_picks_it_up(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    command = Path(sys.executable).with_name("opentelemetry-instrument")
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    done = subprocess.run(
        [str(command), sys.executable, str(app)],
        capture_output=True,
        text=True,
        env=env,
        timeout=time_bound(60, 180),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["FunctionWrapper", "1.0"]


@pytest.mark.usefixtures("instrumented")
async def test_the_callback_handler_attached_as_well_records_nothing_twice(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    handler = AgentwatchCallbackHandler(telemetry)
    agent = create_agent(scripted(), tools=[lookup], name="shop")
    await agent.ainvoke(QUESTION, config={"callbacks": [handler]})
    [_ async for _ in BuiltinChatModel().astream("hello", config={"callbacks": [handler]})]
    BuiltinChatModel().batch(["one", "two"], config={"callbacks": [handler]})
    assert tree(exporter.get_finished_spans())[:4] == SHOP_TREE
    assert len(exporter.get_finished_spans()) == 4 + 1 + 2
    assert tool_count(registry, "lookup", "shop") == 1


@pytest.mark.usefixtures("instrumented")
def test_a_streamed_agent_run_is_the_same_trace(exporter: InMemorySpanExporter) -> None:
    agent = create_agent(scripted(), tools=[lookup], name="shop")
    assert [step for step in agent.stream(QUESTION, stream_mode="updates")]
    assert tree(exporter.get_finished_spans()) == SHOP_TREE


@pytest.mark.usefixtures("instrumented")
async def test_an_agent_stream_dropped_early_ends_cancelled(
    exporter: InMemorySpanExporter,
) -> None:
    stream = create_agent(scripted(), tools=[lookup], name="shop").astream(QUESTION)
    async with aclosing(stream):
        await anext(stream)  # the consumer goes away after the first step
    (run,) = [s for s in exporter.get_finished_spans() if s.name == "invoke_agent shop"]
    assert (run.attributes or {})["agentwatch.outcome"] == "cancelled"
