"""The callback handler records users' own LangChain and LangGraph code as agentwatch's
agent does: nested agents, tools that carry their agent's name, agents that carry their
model, spans current while their work runs, and what the instrumented model and tools
record (content capture included)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import BaseTool, tool
from langgraph.graph import END, START, MessagesState, StateGraph
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from agentwatch.runtime.agents.agent import Agent
from agentwatch.runtime.builtin_model.in_process import BuiltinChatModel
from agentwatch.runtime.langchain.adopt import ObservedTool, agent_tools
from agentwatch.runtime.langchain.callbacks import AgentwatchCallbackHandler
from agentwatch.runtime.langchain.chat_model import InstrumentedChatModel
from agentwatch.runtime.langchain.instrumentor import AgentwatchInstrumentor
from agentwatch.runtime.langchain.tools import langchain_tools
from agentwatch.runtime.retry import RetryPolicy
from agentwatch.runtime.tools import ToolRegistry, ToolSpec
from agentwatch.telemetry import Telemetry

MODEL = "agentwatch-builtin"
CHAT = f"chat {MODEL}"

Tree = tuple[str, tuple[Any, ...]]


def tree(spans: Sequence[ReadableSpan], root: ReadableSpan) -> Tree:
    """``(name, children)`` below ``root``, children in a stable order."""
    below = [s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id]
    return root.name, tuple(sorted(tree(spans, s) for s in below))


def roots(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is None]


def leaf(name: str) -> Tree:
    return name, ()


def sub_agent(name: str, tool_name: str, *inside: Tree) -> Tree:
    """A sub-agent's span: its model asks for the tool, then answers."""
    tool_span = (f"execute_tool {tool_name}", inside)
    return f"invoke_agent {name}", (leaf(CHAT), leaf(CHAT), tool_span)


@tool
def lookup(topic: str) -> str:
    """Look a topic up."""
    return f"found {topic}"


def team_tools(tracer_provider: TracerProvider, telemetry: Telemetry) -> list[BaseTool]:
    """Two named sub-agents, each called from a tool of the supervisor. The researcher's
    tool is async and times its work with ``observe()``; the writer's is sync and opens a
    span of its own."""
    user_tracer = tracer_provider.get_tracer("user")

    @tool
    async def lookup(topic: str) -> str:
        """Look a topic up."""
        async with telemetry.observe("lookup work"):
            await asyncio.sleep(0)
        return f"found {topic}"

    @tool
    def draft(text: str) -> str:
        """Draft a text."""
        with user_tracer.start_as_current_span("draft work"):
            return f"drafted {text}"

    researcher = create_agent(BuiltinChatModel(), tools=[lookup], name="researcher")
    writer = create_agent(BuiltinChatModel(), tools=[draft], name="writer")

    @tool
    async def research(question: str) -> str:
        """Ask the researcher."""
        state = await researcher.ainvoke({"messages": [("user", f"lookup {question}")]})
        return str(state["messages"][-1].text)

    @tool
    async def write(text: str) -> str:
        """Ask the writer."""
        state = await writer.ainvoke({"messages": [("user", f"draft {text}")]})
        return str(state["messages"][-1].text)

    return [research, write]


RESEARCHER = sub_agent("researcher", "lookup", leaf("lookup work"))
WRITER = sub_agent("writer", "draft", leaf("draft work"))
SUPERVISED: Tree = (
    "invoke_agent supervisor",
    tuple(
        sorted(
            (
                leaf(CHAT),
                leaf(CHAT),
                ("execute_tool research", (RESEARCHER,)),
                ("execute_tool write", (WRITER,)),
            )
        )
    ),
)


SUPERVISOR_QUERY = "research cats then write about it"


async def ask(graph: Any, handler: AgentwatchCallbackHandler, text: str) -> None:
    await graph.ainvoke({"messages": [("user", text)]}, config={"callbacks": [handler]})


@pytest.fixture
def supervisor(tracer_provider: TracerProvider, telemetry: Telemetry) -> Any:
    tools = team_tools(tracer_provider, telemetry)
    return create_agent(BuiltinChatModel(), tools=tools, name="supervisor")


async def test_sub_agents_called_from_tools_nest_under_them_with_their_own_spans(
    supervisor: Any, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """Each sub-agent is its own ``invoke_agent`` beneath the tool that called it, with
    its chat and tool spans beneath it; a span started inside a tool, async (observe)
    or sync (the user's tracer), nests under that tool's ``execute_tool``."""
    await ask(supervisor, AgentwatchCallbackHandler(telemetry), SUPERVISOR_QUERY)

    spans = exporter.get_finished_spans()
    (root,) = roots(spans)
    assert tree(spans, root) == SUPERVISED


async def test_fifty_supervisors_at_once_give_fifty_traces_with_no_crossed_parents(
    supervisor: Any, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    handler = AgentwatchCallbackHandler(telemetry)  # one handler shared by every run
    await asyncio.gather(*(ask(supervisor, handler, SUPERVISOR_QUERY) for _ in range(50)))

    spans = exporter.get_finished_spans()
    tops = roots(spans)
    assert len(tops) == 50
    assert len({s.context.trace_id for s in spans}) == 50
    for top in tops:
        assert tree(spans, top) == SUPERVISED
    per_trace = len(spans) // 50
    assert len(spans) == 50 * per_trace
    assert not handler._runs  # every run ended: nothing kept


async def test_a_graph_whose_nodes_are_agents_nests_each_agent_under_the_graph(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """Sub-graphs added as nodes (two create_agent graphs, and a plain compiled graph)
    get their own ``invoke_agent`` spans, named by their graph's name; a graph without a
    name (LangGraph calls it ``LangGraph``) is no agent: its model call belongs to the
    agent above."""

    def tidy(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage("tidied")]}

    inner = StateGraph(MessagesState)
    inner.add_node("tidy", tidy)
    inner.add_edge(START, "tidy")
    inner.add_edge("tidy", END)

    team = StateGraph(MessagesState)
    team.add_node("researcher", create_agent(BuiltinChatModel(), [lookup], name="researcher"))
    team.add_node("editor", create_agent(BuiltinChatModel(), [], name="editor"))
    team.add_node("tidier", inner.compile(name="tidier"))
    team.add_node("unnamed", create_agent(BuiltinChatModel(), []))  # no name: no agent
    team.add_edge(START, "researcher")
    team.add_edge("researcher", "editor")
    team.add_edge("editor", "tidier")
    team.add_edge("tidier", "unnamed")
    team.add_edge("unnamed", END)
    graph = team.compile(name="team")

    handler = AgentwatchCallbackHandler(telemetry)
    await graph.ainvoke({"messages": [("user", "lookup cats")]}, config={"callbacks": [handler]})

    spans = exporter.get_finished_spans()
    (root,) = roots(spans)
    assert tree(spans, root) == (
        "invoke_agent team",
        (
            leaf(CHAT),
            ("invoke_agent editor", (leaf(CHAT),)),
            ("invoke_agent researcher", (leaf(CHAT), leaf(CHAT), leaf("execute_tool lookup"))),
            leaf("invoke_agent tidier"),
        ),
    )


async def test_tools_carry_their_agents_name_and_agents_their_model(
    supervisor: Any, telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    await ask(supervisor, AgentwatchCallbackHandler(telemetry), SUPERVISOR_QUERY)

    def tool_calls(tool_name: str, agent: str) -> float | None:
        labels = {"gen_ai_tool_name": tool_name, "gen_ai_agent_name": agent, "error_type": ""}
        return registry.get_sample_value("gen_ai_execute_tool_duration_seconds_count", labels)

    assert tool_calls("research", "supervisor") == 1
    assert tool_calls("write", "supervisor") == 1
    assert tool_calls("lookup", "researcher") == 1
    assert tool_calls("draft", "writer") == 1
    for agent in ("supervisor", "researcher", "writer"):
        labels = {"gen_ai_agent_name": agent, "gen_ai_request_model": MODEL, "error_type": ""}
        count = "gen_ai_invoke_agent_duration_seconds_count"
        assert registry.get_sample_value(count, labels) == 1, agent
    chat = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "agentwatch",  # the builtin model's _llm_type, mapped
        "gen_ai_request_model": MODEL,
        "error_type": "",
    }
    calls = registry.get_sample_value("gen_ai_client_operation_duration_seconds_count", chat)
    assert calls == 6


async def test_agent_and_tool_spans_carry_the_names(
    supervisor: Any, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    await ask(supervisor, AgentwatchCallbackHandler(telemetry), SUPERVISOR_QUERY)

    agents = [s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent")]
    assert len(agents) == 3
    for span in agents:
        attributes = span.attributes or {}
        assert attributes["gen_ai.request.model"] == MODEL
        assert span.name == f"invoke_agent {attributes['gen_ai.agent.name']}"


def test_a_sync_tool_of_a_sync_invoke_nests_its_own_spans(
    tracer_provider: TracerProvider, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    user_tracer = tracer_provider.get_tracer("user")

    @tool
    def lookup(topic: str) -> str:
        """Look a topic up."""
        with user_tracer.start_as_current_span("lookup work"):
            return f"found {topic}"

    agent = create_agent(BuiltinChatModel(), tools=[lookup], name="shop")
    handler = AgentwatchCallbackHandler(telemetry)
    agent.invoke({"messages": [("user", "lookup cats")]}, config={"callbacks": [handler]})

    spans = exporter.get_finished_spans()
    (root,) = roots(spans)
    assert tree(spans, root) == (
        "invoke_agent shop",
        (leaf(CHAT), leaf(CHAT), ("execute_tool lookup", (leaf("lookup work"),))),
    )


async def test_what_was_current_before_a_run_is_current_after_it_even_when_it_fails(
    tracer_provider: TracerProvider, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """LangChain ends chains and model calls from another task: the caller's context is
    never left holding one of the run's spans, whether the run, or a tool called on its
    own, succeeds or fails."""

    @tool
    async def explode(topic: str) -> str:
        """Explode."""
        raise RuntimeError("boom")

    agent = create_agent(BuiltinChatModel(), tools=[explode, lookup], name="shop")
    handler = AgentwatchCallbackHandler(telemetry)
    config: Any = {"callbacks": [handler]}
    with tracer_provider.get_tracer("user").start_as_current_span("request") as request:
        with pytest.raises(RuntimeError):
            await agent.ainvoke({"messages": [("user", "explode cats")]}, config=config)
        assert trace.get_current_span() is request
        await agent.ainvoke({"messages": [("user", "lookup cats")]}, config=config)
        assert trace.get_current_span() is request
        await lookup.ainvoke({"topic": "cats"}, config=config)
        assert trace.get_current_span() is request
        with pytest.raises(RuntimeError):
            await explode.ainvoke({"topic": "cats"}, config=config)
        assert trace.get_current_span() is request
    failed = next(s for s in exporter.get_finished_spans() if s.name == "invoke_agent shop")
    assert failed.status.status_code is StatusCode.ERROR


async def test_a_model_without_a_name_gives_a_chat_span_named_chat(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage("hi")]))
    await model.ainvoke("hello", config={"callbacks": [AgentwatchCallbackHandler(telemetry)]})

    (span,) = exporter.get_finished_spans()
    assert span.name == "chat"
    assert "gen_ai.request.model" not in (span.attributes or {})


def test_a_graph_recognised_at_its_first_node_is_timed_from_its_own_start(
    tracer_provider: TracerProvider, registry: CollectorRegistry, exporter: InMemorySpanExporter
) -> None:
    now = [0.0]
    telemetry = Telemetry(tracer_provider=tracer_provider, registry=registry, clock=lambda: now[0])
    handler = AgentwatchCallbackHandler(telemetry)
    top, graph, node = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    handler.on_chain_start(None, {}, run_id=top, name="app")
    now[0] = 1.0
    handler.on_chain_start(None, {}, run_id=graph, parent_run_id=top, name="helper")
    now[0] = 3.0  # the graph's own work before its first node
    handler.on_chain_start(
        None, {}, run_id=node, parent_run_id=graph, tags=["graph:step:1"], name="work"
    )
    now[0] = 4.0
    handler.on_chain_end({}, run_id=node)
    handler.on_chain_end({}, run_id=graph)
    handler.on_chain_end({}, run_id=top)

    labels = {"gen_ai_agent_name": "helper", "gen_ai_request_model": "", "error_type": ""}
    assert registry.get_sample_value("gen_ai_invoke_agent_duration_seconds_sum", labels) == 3.0
    helper, app = exporter.get_finished_spans()
    assert helper.name == "invoke_agent helper"
    assert helper.parent is not None
    assert helper.parent.span_id == app.context.span_id


def test_with_capture_on_spans_carry_messages_and_tool_results(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    telemetry = Telemetry(
        tracer_provider=tracer_provider, registry=CollectorRegistry(), capture_content="span"
    )
    handler = AgentwatchCallbackHandler(telemetry)
    run_id, llm_id, ok_id, bad_id = (uuid.uuid4() for _ in range(4))
    handler.on_chain_start({"name": "my_agent"}, {}, run_id=run_id)
    handler.on_chat_model_start(
        {}, [[HumanMessage("weather in Paris?")]], run_id=llm_id, parent_run_id=run_id,
        invocation_params={"model": "gpt-4o"}, metadata={"ls_provider": "openai"},
    )  # fmt: skip
    handler.on_llm_end(
        LLMResult(generations=[[ChatGeneration(message=AIMessage(content="let me look"))]]),
        run_id=llm_id,
    )
    handler.on_tool_start({"name": "weather"}, "Paris", run_id=ok_id, parent_run_id=run_id)
    handler.on_tool_end(ToolMessage("sunny", tool_call_id="c1"), run_id=ok_id)
    handler.on_tool_start({"name": "weather"}, "Nowhere", run_id=bad_id, parent_run_id=run_id)
    handler.on_tool_end(
        ToolMessage("Error: no such city", tool_call_id="c2", status="error"), run_id=bad_id
    )
    handler.on_chain_end({}, run_id=run_id)

    chat, ok, bad, _ = exporter.get_finished_spans()
    chat_attributes = chat.attributes or {}
    assert "weather in Paris?" in str(chat_attributes["gen_ai.input.messages"])
    assert "let me look" in str(chat_attributes["gen_ai.output.messages"])
    assert (ok.attributes or {})["gen_ai.tool.call.result"] == "sunny"
    bad_attributes = bad.attributes or {}
    assert bad_attributes["gen_ai.tool.call.result"] == "Error: no such city"
    assert bad_attributes["error.type"] == "ToolReportedError"
    assert bad.status.status_code is StatusCode.ERROR


async def test_a_tool_recorded_at_its_own_boundary_is_not_recorded_twice(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    """A tool that records itself (agentwatch's agent's tools, the instrumentor's), with
    the handler attached as well: one ``execute_tool`` span, and a sub-agent called
    from it nests under that span."""

    researcher = create_agent(BuiltinChatModel(), tools=[lookup], name="researcher")

    @tool
    async def research(question: str) -> str:
        """Ask the researcher."""
        state = await researcher.ainvoke({"messages": [("user", f"lookup {question}")]})
        return str(state["messages"][-1].text)

    observed = ObservedTool.of(ToolSpec.from_tool(research), telemetry, "supervisor", None)
    supervisor = create_agent(BuiltinChatModel(), tools=[observed], name="supervisor")
    handler = AgentwatchCallbackHandler(telemetry)
    await supervisor.ainvoke(
        {"messages": [("user", "research cats")]}, config={"callbacks": [handler]}
    )

    spans = exporter.get_finished_spans()  # our tool's span beneath the handler's agent
    assert [tree(spans, root) for root in roots(spans)] == [
        (
            "invoke_agent supervisor",
            (
                leaf(CHAT),
                leaf(CHAT),
                ("execute_tool research", (sub_agent("researcher", "lookup"),)),
            ),
        )
    ]
    labels = {"gen_ai_tool_name": "research", "gen_ai_agent_name": "supervisor", "error_type": ""}
    assert registry.get_sample_value("gen_ai_execute_tool_duration_seconds_count", labels) == 1


def test_a_sub_graph_whose_first_step_runs_nodes_in_threads_is_one_agent(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """A sync graph runs the nodes of a step in threads: the sub-graph they belong to is
    recognised by whichever starts first, once."""

    def step(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage("done")]}

    fan = StateGraph(MessagesState)
    for node in ("a", "b", "c", "d"):
        fan.add_node(node, step)
        fan.add_edge(START, node)
        fan.add_edge(node, END)
    team = StateGraph(MessagesState)
    team.add_node("fan", fan.compile(name="fan"))
    team.add_edge(START, "fan")
    team.add_edge("fan", END)
    graph = team.compile(name="team")

    handler = AgentwatchCallbackHandler(telemetry)
    for _ in range(20):  # bounded
        graph.invoke({"messages": [("user", "go")]}, config={"callbacks": [handler]})

    spans = exporter.get_finished_spans()
    assert [tree(spans, root) for root in roots(spans)] == [
        ("invoke_agent team", (leaf("invoke_agent fan"),))
    ] * 20


async def test_a_graphs_thread_is_its_agents_conversation(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    agent = create_agent(BuiltinChatModel(), [], name="shop")
    config: Any = {"callbacks": [AgentwatchCallbackHandler(telemetry)]}
    config["configurable"] = {"thread_id": "order-17"}
    await agent.ainvoke({"messages": [("user", "hello")]}, config=config)

    (span,) = [s for s in exporter.get_finished_spans() if s.name == "invoke_agent shop"]
    assert (span.attributes or {})["gen_ai.conversation.id"] == "order-17"


class InstrumentedBuiltin(InstrumentedChatModel, BuiltinChatModel):
    pass


async def test_an_instrumented_model_under_the_handler_is_one_chat_span_per_call(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    model = InstrumentedBuiltin(telemetry=telemetry)
    agent = create_agent(model, tools=[lookup], name="shop")
    handler = AgentwatchCallbackHandler(telemetry)
    await agent.ainvoke({"messages": [("user", "lookup cats")]}, config={"callbacks": [handler]})

    spans = exporter.get_finished_spans()  # the model's spans beneath the handler's agent
    assert [tree(spans, root) for root in roots(spans)] == [
        ("invoke_agent shop", (leaf(CHAT), leaf(CHAT), leaf("execute_tool lookup")))
    ]
    labels = {"gen_ai_agent_name": "shop", "gen_ai_request_model": MODEL, "error_type": ""}
    count = "gen_ai_invoke_agent_duration_seconds_count"
    assert registry.get_sample_value(count, labels) == 1  # the model, from the model's call


async def test_with_the_instrumentor_on_the_handler_records_nothing_twice(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    agent = create_agent(BuiltinChatModel(), tools=[lookup], name="shop")
    query = {"messages": [("user", "lookup cats")]}
    instrumentor = AgentwatchInstrumentor()
    instrumentor.instrument(telemetry=telemetry)
    try:
        await agent.ainvoke(query)
        alone = sorted(s.name for s in exporter.get_finished_spans())
        exporter.clear()
        handler = AgentwatchCallbackHandler(telemetry)
        await agent.ainvoke(query, config={"callbacks": [handler]})
    finally:
        instrumentor.uninstrument()

    assert alone == [CHAT, CHAT, "execute_tool lookup", "invoke_agent shop"]
    assert sorted(s.name for s in exporter.get_finished_spans()) == alone


async def test_our_agents_stream_under_the_handler_is_one_agent_span(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """agentwatch's ``Agent`` streamed inside a user's chain that carries the handler:
    its ``invoke_agent`` is recorded once (the agent's), as for ``arun``."""
    agent = Agent(
        BuiltinChatModel(),
        ToolRegistry([ToolSpec.from_tool(lookup)]),
        telemetry=telemetry,
        name="shop",
    )

    async def streamed(query: str) -> int:
        return len([event async for event in agent.astream(query)])

    async def ran(query: str) -> str:
        return (await agent.arun(query)).output

    handler = AgentwatchCallbackHandler(telemetry, agent_name="outer")
    shapes = []
    for body in (ran, streamed):
        exporter.clear()
        await RunnableLambda(body).ainvoke("lookup cats", config={"callbacks": [handler]})
        shapes.append(sorted(s.name for s in exporter.get_finished_spans()))

    recorded = [CHAT, CHAT, "execute_tool lookup", "invoke_agent outer", "invoke_agent shop"]
    assert shapes == [recorded] * 2


async def test_a_retried_user_tool_under_the_handler_is_one_tool_span(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """Each retry of a user's tool is a new LangChain run: the handler records none of
    them (the tool's ``execute_tool`` span has a ``retry_attempt`` per attempt)."""
    attempts = 0

    @tool
    async def flaky(topic: str) -> str:
        """Fails once, then answers."""
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("connection lost")
        return f"found {topic}"

    spec = ToolSpec.from_tool(flaky, retry=True)
    policy = RetryPolicy(base_delay=0.001, max_delay=0.001)
    [observed] = agent_tools(ToolRegistry([spec]), telemetry, "shop", policy)
    handler = AgentwatchCallbackHandler(telemetry)
    output = await observed.ainvoke({"topic": "cats"}, config={"callbacks": [handler]})

    assert (attempts, output) == (2, "found cats")
    spans = exporter.get_finished_spans()
    assert [tree(spans, root) for root in roots(spans)] == [
        ("execute_tool flaky", (leaf("retry_attempt execute_tool"),) * 2)
    ]


async def test_a_user_tool_run_inside_our_tool_with_the_handler_is_its_own_span(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """Our tool's body runs a user's tool with the handler in that call's own config:
    the inner call is recorded (by the handler), beneath ours."""

    class Topic(BaseModel):
        topic: str

    handler = AgentwatchCallbackHandler(telemetry)

    async def research(topic: str) -> str:
        return str(await lookup.ainvoke({"topic": topic}, config={"callbacks": [handler]}))

    [ours] = langchain_tools(
        ToolRegistry([ToolSpec("research", "Research a topic.", research, Topic)]),
        telemetry,
        "shop",
    )
    assert await ours.ainvoke({"topic": "cats"}) == "found cats"

    spans = exporter.get_finished_spans()
    assert [tree(spans, root) for root in roots(spans)] == [
        ("execute_tool research", (leaf("execute_tool lookup"),))
    ]
