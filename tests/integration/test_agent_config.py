"""AgentRuntime is configurable: the agent's name, its system prompt, the model's settings.
The defaults are the research agent of the demo, unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.tools import tool
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.runtime import AgentRuntime, RuntimeSettings, ToolRegistry, ToolSpec
from agentwatch.runtime.agents.agent import DEFAULT_SYSTEM_PROMPT
from agentwatch.runtime.agents.prompt import default_system_prompt
from agentwatch.runtime.settings import SettingError
from agentwatch.telemetry import ConfigurationError, Telemetry

pytestmark = pytest.mark.integration

RESEARCH_PROMPT = (
    "You are a research assistant. Use the calculator for any arithmetic and the search "
    "tool for questions about the documentation. Answer briefly."
)


@tool
def get_weather(city: str) -> str:
    """The weather in a city, today.

    Args:
        city: the city's name.
    """
    return f"sunny in {city}"


def system_prompt_sent(exporter: InMemorySpanExporter) -> str:
    """The system message of the first chat request, as its span captured it."""
    chat = next(s for s in exporter.get_finished_spans() if s.name.startswith("chat "))
    messages = json.loads(str((chat.attributes or {})["gen_ai.input.messages"]))
    system = next(m for m in messages if m["role"] == "system")
    return str(system["parts"][0]["content"])


@pytest.fixture
def capturing(tracer_provider: TracerProvider, registry: CollectorRegistry) -> Telemetry:
    """Telemetry with content capture on (spans only): the prompt is on the chat span."""
    return Telemetry(tracer_provider=tracer_provider, registry=registry, capture_content="span")


async def test_the_agent_is_named_and_prompted_as_asked(
    capturing: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    async with AgentRuntime(
        RuntimeSettings(), capturing, agent_name="shop", system_prompt="You sell umbrellas."
    ) as runtime:
        result = await runtime.agent.arun("what is 2 + 3")
    assert "5" in result.output
    names = [s.name for s in exporter.get_finished_spans()]
    assert names[-1] == "invoke_agent shop"
    assert "invoke_agent research_agent" not in names
    assert system_prompt_sent(exporter) == "You sell umbrellas."
    labels = {"gen_ai_agent_name": "shop", "gen_ai_request_model": "agentwatch-builtin"}
    assert (
        registry.get_sample_value(
            "gen_ai_invoke_agent_duration_seconds_count", {**labels, "error_type": ""}
        )
        == 1
    )
    tool_labels = {"gen_ai_tool_name": "calculator", "gen_ai_agent_name": "shop", "error_type": ""}
    assert registry.get_sample_value("gen_ai_execute_tool_duration_seconds_count", tool_labels)


async def test_the_default_prompt_speaks_of_the_tools_registered(
    capturing: Telemetry, exporter: InMemorySpanExporter
) -> None:
    async with AgentRuntime(RuntimeSettings(), capturing, tools=[get_weather]) as runtime:
        result = await runtime.agent.arun("what is the weather in Paris?")
    assert result.tool_calls[0].name == "get_weather"
    prompt = system_prompt_sent(exporter)
    assert "- get_weather: The weather in a city, today." in prompt
    assert "Args" not in prompt  # the description's first paragraph only
    assert "calculator" not in prompt
    assert "search" not in prompt


async def test_the_defaults_are_the_research_agent_of_the_demo(
    capturing: Telemetry, exporter: InMemorySpanExporter
) -> None:
    async with AgentRuntime(RuntimeSettings(), capturing) as runtime:
        assert runtime.agent.name == "research_agent"
        await runtime.agent.arun("what is 2 + 3")
    assert system_prompt_sent(exporter) == RESEARCH_PROMPT == DEFAULT_SYSTEM_PROMPT


def test_a_registry_speaks_of_every_tool_it_holds() -> None:
    async def shout(text: str) -> str:
        return text.upper()

    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    spec = ToolSpec("shout", "Say it louder.", shout, schema)
    registry = ToolRegistry([get_weather], instructions="Use get_weather for the weather.")
    assert default_system_prompt(registry) == "Use get_weather for the weather."
    registry.register(spec)  # the instructions no longer speak of every tool
    prompt = default_system_prompt(registry)
    assert "- get_weather: The weather in a city, today." in prompt
    assert "- shout: Say it louder." in prompt
    assert default_system_prompt(ToolRegistry()) == "You are a helpful assistant. Answer briefly."


async def test_the_models_settings_reach_the_model(telemetry: Telemetry) -> None:
    env = {"AGENTWATCH_TEMPERATURE": "0.2", "AGENTWATCH_MAX_TOKENS": "64"}
    settings = RuntimeSettings.from_env(env)
    assert (settings.temperature, settings.max_tokens) == (0.2, 64)
    async with AgentRuntime(settings, telemetry) as runtime:
        model: Any = runtime.agent.model
        assert (model.temperature, model.max_tokens) == (0.2, 64)
        assert "5" in (await runtime.agent.arun("what is 2 + 3")).output  # the server takes them
    defaults: Any = RuntimeSettings()
    assert (defaults.temperature, defaults.max_tokens) == (None, None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGENTWATCH_TEMPERATURE": "3"}, "AGENTWATCH_TEMPERATURE must be 0-2, got 3"),
        ({"AGENTWATCH_TEMPERATURE": "warm"}, "AGENTWATCH_TEMPERATURE must be a number"),
        ({"AGENTWATCH_MAX_TOKENS": "0"}, "AGENTWATCH_MAX_TOKENS must be at least 1, got 0"),
        ({"AGENTWATCH_MAX_TOKENS": "1.5"}, "AGENTWATCH_MAX_TOKENS must be a whole number"),
    ],
)
def test_model_settings_out_of_range_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingError, match=message):
        RuntimeSettings.from_env(env)


@pytest.mark.parametrize("name", ["", "  ", None])
def test_an_agent_needs_a_name(telemetry: Telemetry, name: Any) -> None:
    with pytest.raises(ConfigurationError, match="the agent's name must be some text"):
        AgentRuntime(RuntimeSettings(), telemetry, agent_name=name)
