"""Retries against the builtin model over real HTTP: counted requests, spans, metrics."""

from __future__ import annotations

from dataclasses import replace

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from agentwatch.runtime.agents.agent_runtime import AgentRuntime
from agentwatch.runtime.builtin_model import ModelBehavior
from agentwatch.runtime.retry import RetryPolicy
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.runtime.tools import ToolRegistry, ToolSpec
from agentwatch.telemetry import Telemetry
from tests.helpers import retry_attempts

pytestmark = pytest.mark.integration

QUICK = RetryPolicy(max_tries=4, base_delay=0.01, max_delay=0.05)


async def test_two_429s_then_success(
    telemetry: Telemetry, registry: CollectorRegistry, exporter: InMemorySpanExporter
) -> None:
    behavior = ModelBehavior(fail_first=2, fail_status=429, retry_after=0.02)
    async with AgentRuntime(
        RuntimeSettings(), telemetry, model_behavior=behavior, retry_policy=QUICK
    ) as runtime:
        result = await runtime.agent.arun("hello")
        assert runtime.model_server is not None
        assert runtime.model_server.requests == 3  # the SDK's own retries are off
    assert result.output.startswith("I am the agentwatch builtin model")
    assert (retry_attempts(registry, "retry"), retry_attempts(registry, "success")) == (2, 1)
    assert registry.get_sample_value(
        "agentwatch_retry_backoff_seconds_sum", {"operation": "chat"}
    ) == pytest.approx(0.04)

    spans = exporter.get_finished_spans()
    agent = spans[-1]
    chat = next(s for s in spans if s.name.startswith("chat"))
    tries = sorted(
        (s for s in spans if s.name == "retry_attempt chat"), key=lambda s: s.start_time or 0
    )
    assert [(s.attributes or {})["agentwatch.retry.attempt"] for s in tries] == [1, 2, 3]
    assert [(s.attributes or {})["agentwatch.retry.wait"] for s in tries] == [0.0, 0.02, 0.02]
    assert [(s.attributes or {})["agentwatch.retry.outcome"] for s in tries] == [
        "retry", "retry", "success"
    ]  # fmt: skip
    # langchain-openai re-raises openai's RateLimitError as its own subclass
    assert [(s.attributes or {}).get("error.type") for s in tries] == [
        "OpenAIRateLimitError", "OpenAIRateLimitError", None
    ]  # fmt: skip
    for attempt in tries:
        assert attempt.parent is not None
        assert attempt.parent.span_id == chat.context.span_id
        assert attempt.context.trace_id == agent.context.trace_id
    assert (tries[1].start_time or 0) > (tries[0].end_time or 0)  # in order, not overlapping


async def test_a_400_is_not_retried(telemetry: Telemetry, registry: CollectorRegistry) -> None:
    behavior = ModelBehavior(fail_first=1, fail_status=400)
    async with AgentRuntime(
        RuntimeSettings(), telemetry, model_behavior=behavior, retry_policy=QUICK
    ) as runtime:
        with pytest.raises(openai.BadRequestError):
            await runtime.agent.arun("hello")
        assert runtime.model_server is not None
        assert runtime.model_server.requests == 1
    assert retry_attempts(registry, "failed") == 1  # a 400 is not worth a retry: no give-up
    assert retry_attempts(registry, "giveup") == 0
    assert retry_attempts(registry, "retry") == 0


async def test_a_hang_is_cut_by_the_timeout_and_retried(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    behavior = ModelBehavior(hang_first=1, hang_for=5.0)
    settings = replace(RuntimeSettings(), model_timeout=0.3)
    async with AgentRuntime(
        settings, telemetry, model_behavior=behavior, retry_policy=QUICK
    ) as runtime:
        result = await runtime.agent.arun("hello")
        assert runtime.model_server is not None
        assert runtime.model_server.requests == 2
    assert result.output
    assert (retry_attempts(registry, "retry"), retry_attempts(registry, "success")) == (1, 1)


async def test_a_stream_is_retried_before_its_first_token(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    behavior = ModelBehavior(fail_first=1, fail_status=503)
    async with AgentRuntime(
        RuntimeSettings(), telemetry, model_behavior=behavior, retry_policy=QUICK
    ) as runtime:
        events = [e async for e in runtime.agent.astream("hello")]
        assert runtime.model_server is not None
        assert runtime.model_server.requests == 2
    assert events[-1].type == "result"
    assert (retry_attempts(registry, "retry"), retry_attempts(registry, "success")) == (1, 1)


class Args(BaseModel):
    expression: str


async def test_tools_retry_only_when_they_opt_in(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    calls: list[str] = []

    async def flaky(expression: str) -> str:
        calls.append(expression)
        if len(calls) == 1:
            raise ConnectionError("backend reset")
        return "4"

    for opt_in, expect_error, expect_calls in [(True, False, 2), (False, True, 1)]:
        calls.clear()
        tools = ToolRegistry([ToolSpec("calculator", "calc", flaky, Args, retry=opt_in)])
        async with AgentRuntime(
            RuntimeSettings(), telemetry, tools=tools, retry_policy=QUICK
        ) as runtime:
            result = await runtime.agent.arun("what is 2 + 2")
        assert result.tool_calls[0].error is expect_error
        assert len(calls) == expect_calls
    assert retry_attempts(registry, "retry", "execute_tool") == 1
    assert retry_attempts(registry, "success", "execute_tool") == 1
