"""The agent over real HTTP to the builtin model: answers, traces, metrics, tool failures."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, SecretStr

from agentwatch.runtime.agents.agent import (
    RECURSION_LIMIT,
    Agent,
    AgentInputError,
    AgentRunError,
    RunTimeoutError,
    StepLimitError,
)
from agentwatch.runtime.agents.agent_runtime import AgentRuntime
from agentwatch.runtime.builtin_model import BuiltinModelServer, ModelBehavior
from agentwatch.runtime.events import RunEvent
from agentwatch.runtime.langchain.chat_model import InstrumentedChatOpenAI
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.runtime.tools import ToolRegistry, ToolSpec
from agentwatch.runtime.tools.search import SearchError
from agentwatch.telemetry import Telemetry
from tests.helpers import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def runtime(telemetry: Telemetry) -> AsyncIterator[AgentRuntime]:
    async with AgentRuntime(RuntimeSettings(), telemetry) as started:
        yield started


def by_id(spans: tuple[ReadableSpan, ...]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in spans}


def root_of(span: ReadableSpan, spans: dict[int, ReadableSpan]) -> ReadableSpan:
    while span.parent is not None and span.parent.span_id in spans:
        span = spans[span.parent.span_id]
    return span


async def test_arithmetic_run_answers_with_spans_and_metrics(
    runtime: AgentRuntime, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    result = await runtime.agent.arun("what is 123 + 456")
    assert "579" in result.output
    assert [(c.name, c.arguments, c.result, c.error) for c in result.tool_calls] == [
        ("calculator", {"expression": "123 + 456"}, "579", False)
    ]
    assert result.usage.input_tokens > 0
    assert result.usage.output_tokens > 0
    assert runtime.model_server is not None
    assert runtime.model_server.requests == 2  # a tool call, then the answer: real HTTP

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [
        "chat agentwatch-builtin",
        "execute_tool calculator",
        "chat agentwatch-builtin",
        "invoke_agent research_agent",
    ]
    agent = spans[-1]
    assert format(agent.context.trace_id, "032x") == result.trace_id
    for child in spans[:-1]:
        assert child.parent is not None
        assert child.parent.span_id == agent.context.span_id
    chat = spans[0].attributes or {}
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.provider.name"] == "agentwatch"
    assert chat["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert isinstance(chat["gen_ai.usage.input_tokens"], int)
    tool = spans[1].attributes or {}
    assert tool["gen_ai.tool.call.id"] == result.tool_calls[0].id
    assert "gen_ai.tool.call.arguments" not in tool  # content capture is off by default

    def value(name: str, labels: dict[str, str]) -> float | None:
        return registry.get_sample_value(name, labels)

    chat_labels = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "agentwatch",
        "gen_ai_request_model": "agentwatch-builtin",
    }
    assert (
        value("gen_ai_client_operation_duration_seconds_count", chat_labels | {"error_type": ""})
        == 2
    )
    assert (
        value("gen_ai_client_token_usage_count", chat_labels | {"gen_ai_token_type": "input"}) == 2
    )
    assert (
        value("gen_ai_client_token_usage_sum", chat_labels | {"gen_ai_token_type": "output"})
        == result.usage.output_tokens
    )
    assert (
        value(
            "gen_ai_invoke_agent_duration_seconds_count",
            {
                "gen_ai_agent_name": "research_agent",
                "gen_ai_request_model": "agentwatch-builtin",
                "error_type": "",
            },
        )
        == 1
    )
    assert (
        value(
            "gen_ai_execute_tool_duration_seconds_count",
            {
                "gen_ai_tool_name": "calculator",
                "gen_ai_agent_name": "research_agent",
                "error_type": "",
            },
        )
        == 1
    )


async def test_fifty_concurrent_runs_are_fifty_traces(
    runtime: AgentRuntime, exporter: InMemorySpanExporter
) -> None:
    results = await asyncio.gather(*(runtime.agent.arun(f"what is {i} + 1000") for i in range(50)))
    assert [r.output for r in results] == [f"The answer is {i + 1000}." for i in range(50)]
    spans = by_id(exporter.get_finished_spans())
    agents = [s for s in spans.values() if s.name.startswith("invoke_agent")]
    assert len(agents) == 50
    assert len({s.context.trace_id for s in agents}) == 50
    assert {format(s.context.trace_id, "032x") for s in agents} == {r.trace_id for r in results}
    for span in spans.values():
        if span.name.startswith(("chat", "execute_tool")):
            root = root_of(span, spans)
            assert root.name == "invoke_agent research_agent"
            assert root.context.trace_id == span.context.trace_id
    assert sum(s.name.startswith("chat") for s in spans.values()) == 100


class NoArgs(BaseModel):
    pass


async def test_failing_and_slow_tools_fail_their_call_not_the_run(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    async def broken(expression: str) -> str:
        raise RuntimeError("disk on fire")

    async def slow(expression: str) -> str:
        await asyncio.Event().wait()  # never answers: only the tool timeout ends it
        return ""

    from agentwatch.runtime.tools.calculator import CalculatorArgs

    for func, timeout, error_type, message in [
        (broken, 5.0, "RuntimeError", "disk on fire"),
        (slow, 0.2, "TimeoutError", "timed out after 0.2 s"),
    ]:
        exporter.clear()
        tools = ToolRegistry(
            [ToolSpec("calculator", "calc", func, CalculatorArgs, timeout=timeout)]
        )
        async with AgentRuntime(RuntimeSettings(), telemetry, tools=tools) as rt:
            result = await rt.agent.arun("what is 2 + 2")
        assert result.tool_calls[0].error
        assert message in result.output  # the model saw the error and answered
        tool_span = next(
            s for s in exporter.get_finished_spans() if s.name.startswith("execute_tool")
        )
        assert tool_span.status.status_code is StatusCode.ERROR
        assert (tool_span.attributes or {})["error.type"] == error_type
        agent_span = exporter.get_finished_spans()[-1]
        assert agent_span.status.status_code is StatusCode.UNSET
        assert (
            registry.get_sample_value(
                "gen_ai_execute_tool_duration_seconds_count",
                {
                    "gen_ai_tool_name": "calculator",
                    "gen_ai_agent_name": "research_agent",
                    "error_type": error_type,
                },
            )
            == 1
        )


async def test_hostile_calculator_input_is_refused_and_the_agent_goes_on(
    runtime: AgentRuntime,
) -> None:
    for query in [
        "calculate __import__('os').system('id')",
        "calculate 9**9**9",
        "calculate " + "9" * 20_000,
    ]:
        result = await runtime.agent.arun(query)
        assert result.tool_calls[0].error
        assert result.output.startswith("I could not use the calculator tool: Error:")
    assert "579" in (await runtime.agent.arun("what is 123 + 456")).output


async def test_bad_queries_are_refused_before_any_request(runtime: AgentRuntime) -> None:
    for bad in ["", "   ", "x" * 40_000, 42]:
        with pytest.raises(AgentInputError):
            await runtime.agent.arun(bad)  # type: ignore[arg-type]
    assert runtime.model_server is not None
    assert runtime.model_server.requests == 0


@pytest.fixture
def capturing(tracer_provider: TracerProvider) -> Telemetry:
    """Telemetry with content capture on (spans only)."""
    return Telemetry(
        tracer_provider=tracer_provider, registry=CollectorRegistry(), capture_content="span"
    )


async def test_content_capture_is_opt_in(
    capturing: Telemetry, exporter: InMemorySpanExporter
) -> None:
    async with AgentRuntime(replace(RuntimeSettings(), run_timeout=30), capturing) as rt:
        await rt.agent.arun("what is 123 + 456")
    spans = exporter.get_finished_spans()
    chat = spans[0].attributes or {}
    assert "what is 123 + 456" in str(chat["gen_ai.input.messages"])
    tool = spans[1].attributes or {}
    assert tool["gen_ai.tool.call.result"] == "579"


async def test_a_failed_tools_captured_result_is_the_error_the_model_saw(
    capturing: Telemetry, exporter: InMemorySpanExporter
) -> None:
    async def broken(expression: str) -> str:
        raise RuntimeError("disk on fire")

    from agentwatch.runtime.tools.calculator import CalculatorArgs

    tools = ToolRegistry([ToolSpec("calculator", "calc", broken, CalculatorArgs)])
    async with AgentRuntime(RuntimeSettings(), capturing, tools=tools) as rt:
        result = await rt.agent.arun("what is 2 + 2")
    call = result.tool_calls[0]
    assert call.error
    tool = next(s for s in exporter.get_finished_spans() if s.name.startswith("execute_tool"))
    assert tool.status.status_code is StatusCode.ERROR
    assert (tool.attributes or {})["gen_ai.tool.call.result"] == call.result
    assert "disk on fire" in call.result


async def drain(events: AsyncGenerator[RunEvent, None]) -> None:
    async with aclosing(events):
        async for _ in events:
            pass


class OwnDeadlineChat(InstrumentedChatOpenAI):
    """A user's chat model that puts its own deadline on every call it makes."""

    deadline: float = 0.2

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        async with asyncio.timeout(self.deadline):
            return await super().ainvoke(input, config, **kwargs)


async def test_a_timeout_inside_the_run_is_not_the_run_timeout(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    """Only the run's own deadline is reported as the run timeout: the model's own
    TimeoutError surfaces as it is, from arun and from astream."""
    async with BuiltinModelServer(ModelBehavior(latency=5.0, time_to_first_token=5.0)) as server:
        model = await asyncio.to_thread(
            OwnDeadlineChat,
            model="agentwatch-builtin",
            base_url=server.base_url,
            api_key=SecretStr("x"),
            max_retries=0,
            telemetry=telemetry,
            provider_name="agentwatch",
        )
        agent = Agent(model, ToolRegistry(), telemetry=telemetry, model_name="agentwatch-builtin")
        with pytest.raises(TimeoutError) as raised:
            await asyncio.wait_for(agent.arun("hello"), timeout=30)
        assert not isinstance(raised.value, AgentRunError)
        with pytest.raises(TimeoutError) as raised:
            await drain(agent.astream("hello"))
        assert not isinstance(raised.value, AgentRunError)
    assert (
        registry.get_sample_value(
            "gen_ai_invoke_agent_duration_seconds_count",
            {
                "gen_ai_agent_name": "research_agent",
                "gen_ai_request_model": "agentwatch-builtin",
                "error_type": "TimeoutError",
            },
        )
        == 2
    )


async def test_the_runs_own_deadline_and_step_limit_are_their_own_errors(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    settings = replace(RuntimeSettings(), run_timeout=0.3, builtin_latency=5.0)
    async with AgentRuntime(settings, telemetry) as rt:
        with pytest.raises(RunTimeoutError, match=r"longer than 0\.3 s"):
            await rt.agent.arun("hello")
        with pytest.raises(RunTimeoutError):
            await drain(rt.agent.astream("hello"))
    async with AgentRuntime(RuntimeSettings(), telemetry) as rt:
        rt.agent.max_steps = 2  # model, tools: no step left for the answer
        with pytest.raises(StepLimitError, match="within 2 steps"):
            await rt.agent.arun("what is 2 + 2")
        with pytest.raises(StepLimitError):
            await drain(rt.agent.astream("what is 2 + 2"))
        rt.agent.max_steps = RECURSION_LIMIT
        assert "4" in (await rt.agent.arun("what is 2 + 2")).output

    def failed(error_type: str) -> float | None:
        return registry.get_sample_value(
            "gen_ai_invoke_agent_duration_seconds_count",
            {
                "gen_ai_agent_name": "research_agent",
                "gen_ai_request_model": "agentwatch-builtin",
                "error_type": error_type,
            },
        )

    assert failed("RunTimeoutError") == 2  # the same label from arun and astream
    assert failed("StepLimitError") == 2


def _open_sockets() -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("socket:")
    return count


async def test_a_failed_start_stops_the_builtin_model_it_started(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    settings = replace(RuntimeSettings(), corpus_dir=tmp_path / "no-such-corpus")
    runtime = AgentRuntime(settings, telemetry)
    before = await asyncio.to_thread(_open_sockets)
    with pytest.raises(SearchError, match="does not exist"):
        await runtime.start()
    assert runtime.model_server is None
    assert not runtime.started
    assert await asyncio.to_thread(_open_sockets) == before  # no listener left behind


def test_runtimes_in_successive_event_loops_share_no_connection_pool(
    telemetry: Telemetry,
) -> None:
    """Each runtime owns its model client's connection pool and closes it. langchain-openai
    caches one pool per (base URL, timeout) for the whole process: a runtime in a new
    event loop, talking to a model on the same URL, once got that pool's connections from
    the closed loop ("Event loop is closed", a 500 for the user)."""
    port = free_port()
    settings = replace(
        RuntimeSettings(),
        api_key="unused-by-the-builtin-model",
        base_url=f"http://127.0.0.1:{port}/v1",
        model="agentwatch-builtin",
    )

    async def one_run() -> str:
        async with (
            BuiltinModelServer(port=port),
            AgentRuntime(settings, telemetry) as runtime,
        ):
            return (await runtime.agent.arun("what is 2 + 3")).output

    answers = [asyncio.run(one_run()) for _ in range(3)]  # three loops, one after another
    assert all("5" in answer for answer in answers), answers
