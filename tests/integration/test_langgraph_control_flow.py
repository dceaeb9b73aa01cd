"""LangGraph as users write it, under the instrumentor and the callback handler: calls
made without a config, interrupts and handoffs (control flow, not failures), a tool that
calls itself, graphs traced by the handler around graphs the instrumentor records, and
the model a deployment names."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage
from langchain_core.tools import InjectedToolCallId, tool
from langchain_openai import AzureChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, interrupt
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

from agentwatch.runtime import AgentwatchCallbackHandler, BuiltinChatModel
from agentwatch.runtime.langchain.chat_calls import request_model
from agentwatch.telemetry import Telemetry

CHAT = "chat agentwatch-builtin"
WEATHER = {"messages": [("user", "What's the weather in Paris? Use get_weather.")]}

Tree = tuple[str, tuple[Any, ...]]


def trees(spans: Sequence[ReadableSpan]) -> list[Tree]:
    """Each root's ``(name, children)``, children in a stable order."""

    def below(root: ReadableSpan) -> Tree:
        kids = [s for s in spans if s.parent and s.parent.span_id == root.context.span_id]
        return root.name, tuple(sorted(below(s) for s in kids))

    return sorted(below(s) for s in spans if s.parent is None)


def leaf(name: str) -> Tree:
    return name, ()


@pytest.fixture(params=["instrumentor", "handler"])
def mode(request: pytest.FixtureRequest, telemetry: Telemetry) -> dict[str, Any]:
    """The config to call with: none under the instrumentor, the handler's otherwise."""
    if request.param == "handler":
        return {"callbacks": [AgentwatchCallbackHandler(telemetry)]}
    request.getfixturevalue("instrumented")
    return {}


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@tool
def get_time(city: str) -> str:
    """The time in a city."""
    return "noon"


def test_an_interrupted_tool_pauses_its_run_and_fails_nothing(
    mode: dict[str, Any], exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    @tool
    def get_weather(city: str) -> str:
        """The weather in a city, once a human approves."""
        return f"sunny in {city} ({interrupt('approve?')})"

    agent = create_agent(
        BuiltinChatModel(), tools=[get_weather], name="shop", checkpointer=InMemorySaver()
    )
    config = {**mode, "configurable": {"thread_id": "t1"}}
    assert "__interrupt__" in agent.invoke(WEATHER, config=config)
    resumed = agent.invoke(Command(resume="yes"), config=config)

    assert "(yes)" in str(resumed["messages"][-2].content)
    spans = exporter.get_finished_spans()
    assert {s.status.status_code for s in spans} == {StatusCode.UNSET}
    for metric in ("gen_ai_invoke_agent_duration_seconds", "gen_ai_execute_tool_duration_seconds"):
        families = [f for f in registry.collect() if f.name == metric]
        errors = {s.labels["error_type"] for f in families for s in f.samples}
        assert errors == {""}, metric


def test_a_handoff_to_a_sibling_agent_is_no_failure(
    mode: dict[str, Any], exporter: InMemorySpanExporter
) -> None:
    @tool
    def transfer_to_clock(tool_call_id: Annotated[str, InjectedToolCallId]) -> Command[Any]:
        """Hand off to the clock agent."""
        done = ToolMessage("transferred", tool_call_id=tool_call_id)
        return Command(goto="clock_agent", graph=Command.PARENT, update={"messages": [done]})

    front = create_agent(BuiltinChatModel(), tools=[transfer_to_clock], name="front_agent")
    clock = create_agent(BuiltinChatModel(), tools=[get_time], name="clock_agent")
    swarm = (
        StateGraph(MessagesState)
        .add_node("front_agent", front, destinations=("clock_agent",))
        .add_node("clock_agent", clock)
        .add_edge(START, "front_agent")
        .compile(name="swarm")
    )
    swarm.invoke({"messages": [("user", "Please use transfer_to_clock.")]}, config=mode)

    spans = exporter.get_finished_spans()
    assert trees(spans) == [
        (
            "invoke_agent swarm",
            (
                ("invoke_agent clock_agent", (leaf(CHAT),)),
                ("invoke_agent front_agent", (leaf(CHAT), leaf("execute_tool transfer_to_clock"))),
            ),
        )
    ]
    assert {s.status.status_code for s in spans} == {StatusCode.UNSET}


@pytest.mark.usefixtures("instrumented")
def test_a_tool_that_calls_itself_is_a_span_per_call(exporter: InMemorySpanExporter) -> None:
    @tool
    def countdown(n: int) -> str:
        """Count down to zero."""
        return "zero" if n == 0 else str(countdown.invoke({"n": n - 1}))

    assert countdown.invoke({"n": 2}) == "zero"
    inner = ("execute_tool countdown", (leaf("execute_tool countdown"),))
    assert trees(exporter.get_finished_spans()) == [("execute_tool countdown", (inner,))]


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("call", ["invoke", "stream", "astream"])
async def test_under_the_handler_a_model_streamed_without_a_config_nests_in_its_agent(
    call: str, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """A node that calls the model with no config (LangGraph hands the run's callbacks
    down), in an unnamed graph the handler traces and a named agent the instrumentor
    records inside it: one trace, every span in its place."""
    model = BuiltinChatModel()

    async def write(state: MessagesState) -> dict[str, Any]:
        if call == "invoke":
            answer = await model.ainvoke(state["messages"])
        elif call == "stream":
            answer = None
            for chunk in model.stream(state["messages"]):
                answer = chunk if answer is None else answer + chunk
        else:
            answer = None
            async for chunk in model.astream(state["messages"]):
                answer = chunk if answer is None else answer + chunk
        return {"messages": [answer]}

    writer = (
        StateGraph(MessagesState)
        .add_node("write", write)
        .add_edge(START, "write")
        .add_edge("write", END)
        .compile(name="writer")
    )
    shop = create_agent(BuiltinChatModel(), tools=[get_weather], name="shop")

    async def front(state: MessagesState) -> dict[str, Any]:
        await writer.ainvoke(state)
        return {"messages": (await shop.ainvoke(state))["messages"][-1:]}

    outer = (
        StateGraph(MessagesState)
        .add_node("front", front)
        .add_edge(START, "front")
        .add_edge("front", END)
        .compile()
    )
    handler = AgentwatchCallbackHandler(telemetry, agent_name="frontdoor")
    await outer.ainvoke(WEATHER, config={"callbacks": [handler]})

    shop_tree = ("invoke_agent shop", (leaf(CHAT), leaf(CHAT), leaf("execute_tool get_weather")))
    assert trees(exporter.get_finished_spans()) == [
        (
            "invoke_agent frontdoor",
            (("invoke_agent shop", shop_tree[1]), ("invoke_agent writer", (leaf(CHAT),))),
        )
    ]


def test_an_azure_deployment_is_the_request_model() -> None:
    model = AzureChatOpenAI(
        azure_deployment="my-gpt4o-deployment",
        azure_endpoint="http://127.0.0.1:9",
        api_key="not-used",  # type: ignore[arg-type]
        api_version="2024-10-21",
    )
    assert request_model(model, {}) == "my-gpt4o-deployment"


def test_the_zero_code_way_captures_content_when_the_variable_asks() -> None:
    """``instrument()`` with no setup at all (what ``opentelemetry-instrument`` does):
    the process's telemetry captures content as the GenAI variable says."""
    script = (
        "from agentwatch.runtime import AgentwatchInstrumentor\n"
        "from agentwatch.telemetry import get_telemetry\n"
        "AgentwatchInstrumentor().instrument()\n"
        "print(get_telemetry().capturing)\n"
    )
    outputs = []
    for value in ("true", "", "bogus"):
        env = {**os.environ, "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": value}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outputs.append((done.stdout.strip(), "content is not captured" in done.stderr))
    assert outputs == [("True", False), ("False", False), ("False", True)]
