"""A run's cost: partial when some of its calls could not be priced."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from agentwatch.runtime.agents.agent import Agent
from agentwatch.runtime.results import Usage, usage_line
from agentwatch.runtime.tools import ToolSpec
from agentwatch.telemetry import Telemetry

TOPIC = {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]}
USAGE = {"input_tokens": 1000, "output_tokens": 10, "total_tokens": 1010}


async def lookup(topic: str) -> str:
    return f"notes on {topic}"


class _TwoModels(BaseChatModel):
    """Its first answer comes from a priced model, its second from an unpriced one."""

    model_name: str = "my-own-llm"
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "two-models"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.calls += 1
        if self.calls == 1:
            call = {"name": "lookup", "args": {"topic": "x"}, "id": "c1"}
            message = AIMessage(
                content="",
                tool_calls=[call],
                usage_metadata=USAGE,
                response_metadata={"model_name": "gpt-4o-mini"},
            )
        else:
            message = AIMessage(content="done", usage_metadata=USAGE)
        return ChatResult(generations=[ChatGeneration(message=message)])


async def test_a_run_mixing_priced_and_unpriced_calls_is_marked_partial(
    telemetry: Telemetry,
) -> None:
    agent = Agent(
        _TwoModels(), [ToolSpec("lookup", "Look a topic up.", lookup, TOPIC)], telemetry=telemetry
    )
    result = await agent.arun("look it up")
    assert result.usage.cost_usd is not None
    assert result.usage.cost_usd > 0
    assert result.usage.unpriced_calls == 1
    assert result.to_dict()["usage"]["unpriced_calls"] == 1
    assert "partial: 1 call(s) unpriced" in usage_line(result.usage)


def test_a_run_with_every_call_priced_is_not_partial() -> None:
    assert "partial" not in usage_line(Usage(10, 10, 0.5))
