"""Cost end to end: the agent over real HTTP to the builtin model answering as gpt-4o-mini."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.runtime.agents.agent_runtime import AgentRuntime
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry
from agentwatch.telemetry import names as n

pytestmark = pytest.mark.integration

INPUT_PER_TOKEN = 0.15 / 1_000_000  # gpt-4o-mini in genai-prices' bundled table
OUTPUT_PER_TOKEN = 0.60 / 1_000_000


@pytest.fixture
async def mini(telemetry: Telemetry) -> AsyncIterator[AgentRuntime]:
    async with AgentRuntime(RuntimeSettings(model="gpt-4o-mini"), telemetry) as started:
        yield started


async def test_a_runs_cost_is_its_tokens_at_the_tables_prices(
    mini: AgentRuntime, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    result = await mini.agent.arun("what is 123 + 456")
    usage = result.usage
    assert usage.input_tokens > 0
    assert usage.output_tokens > 0
    expected = usage.input_tokens * INPUT_PER_TOKEN + usage.output_tokens * OUTPUT_PER_TOKEN
    assert usage.cost_usd == pytest.approx(expected)
    assert result.to_dict()["usage"]["cost_usd"] == pytest.approx(expected)

    spans = exporter.get_finished_spans()
    chats = [s.attributes or {} for s in spans if s.name == "chat gpt-4o-mini"]
    assert len(chats) == 2
    for chat in chats:
        tokens_cost = (
            int(chat[n.GEN_AI_USAGE_INPUT_TOKENS]) * INPUT_PER_TOKEN  # type: ignore[arg-type]
            + int(chat[n.GEN_AI_USAGE_OUTPUT_TOKENS]) * OUTPUT_PER_TOKEN  # type: ignore[arg-type]
        )
        assert chat[n.AGENTWATCH_USAGE_COST_AMOUNT] == pytest.approx(tokens_cost)
    agent = spans[-1].attributes or {}
    assert agent[n.AGENTWATCH_RUN_COST_AMOUNT] == pytest.approx(expected)

    counted = registry.get_sample_value(
        f"{n.M_COST}_total",
        {
            n.L_GEN_AI_PROVIDER_NAME: "agentwatch",  # the builtin model's, unknown to the table
            n.L_GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
            n.L_GEN_AI_AGENT_NAME: "research_agent",
        },
    )
    assert counted == pytest.approx(expected)


async def test_the_builtin_models_own_name_is_unpriced(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    async with AgentRuntime(RuntimeSettings(), telemetry) as runtime:
        result = await runtime.agent.arun("what is 2 + 2")
    assert result.usage.cost_usd is None
    assert result.to_dict()["usage"]["cost_usd"] is None
    unpriced = registry.get_sample_value(
        f"{n.M_UNPRICED_CALLS}_total",
        {n.L_GEN_AI_PROVIDER_NAME: "agentwatch", n.L_GEN_AI_REQUEST_MODEL: "agentwatch-builtin"},
    )
    assert unpriced == 2
