"""Cost from odd usage and odd prices: streamed usage in parts, Anthropic's cache writes by
lifetime, negative or huge counts, prices beyond reason, a price file that is no file."""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.runtime.langchain.chat_calls import usage_fields
from agentwatch.runtime.langchain.chat_model import InstrumentedChatModel
from agentwatch.telemetry import ConfigurationError, PriceTable, Telemetry
from agentwatch.telemetry import names as n
from tests.helpers import time_bound

M = 1_000_000
COST = f"{n.M_COST}_total"


def cost_total(registry: CollectorRegistry) -> float:
    return sum(
        s.value
        for m in registry.collect()
        if m.name == n.M_COST
        for s in m.samples
        if s.name == COST
    )


class _Split(BaseChatModel):
    """A stream whose usage comes in two parts (deltas, as LangChain adds them)."""

    model_name: str = "gpt-4o-mini"

    @property
    def _llm_type(self) -> str:
        return "split"

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="Hello",
                usage_metadata={"input_tokens": M, "output_tokens": 1, "total_tokens": M + 1},
            )
        )
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content=" world",
                usage_metadata={
                    "input_tokens": 0,
                    "output_tokens": M - 1,
                    "total_tokens": M - 1,
                },
            ),
            generation_info={"finish_reason": "stop"},
        )


class _InstrumentedSplit(InstrumentedChatModel, _Split):
    pass


async def test_usage_that_comes_in_parts_is_billed_in_full(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    model = _InstrumentedSplit(telemetry=telemetry, provider_name="openai")
    total: BaseMessage | None = None
    async for chunk in model.astream("hi"):
        total = chunk if total is None else total + chunk
    assert isinstance(total, AIMessageChunk)
    assert total.usage_metadata is not None
    assert total.usage_metadata["input_tokens"] == M  # what LangChain adds up
    assert total.usage_metadata["output_tokens"] == M
    assert cost_total(registry) == pytest.approx(0.15 + 0.60)


def test_anthropic_cache_writes_by_lifetime_are_priced_as_cache_writes(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    # as langchain-anthropic 1.7 converts the API's cache_creation breakdown
    usage = {
        "input_tokens": 100_100,
        "output_tokens": 50,
        "total_tokens": 100_150,
        "input_token_details": {
            "cache_read": 0,
            "cache_creation": 0,
            "ephemeral_5m_input_tokens": 60_000,
            "ephemeral_1h_input_tokens": 40_000,
        },
    }
    fields = usage_fields(usage)
    assert fields["cache_write_tokens"] == 100_000
    with telemetry.llm_call("claude-3-5-sonnet-20241022", "anthropic") as call:
        call.set_response(**fields)
    price = PriceTable().price("anthropic", "claude-3-5-sonnet-20241022")
    assert price is not None
    assert call.cost_usd == pytest.approx(price.cost(100_100, 50, 0, 100_000))
    assert call.cost_usd > price.cost(100_100, 50)  # not at the plain input price
    attrs = exporter.get_finished_spans()[0].attributes or {}
    assert attrs[n.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 100_000


def test_negative_counts_count_as_zero() -> None:
    fields = usage_fields(
        {
            "input_tokens": -1000,
            "output_tokens": 10,
            "input_token_details": {"cache_read": -500, "cache_creation": -3},
            "output_token_details": {"reasoning": -7},
        }
    )
    assert fields == {
        "input_tokens": 0,
        "output_tokens": 10,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
    }


def test_a_negative_count_never_lowers_a_cost_or_raises(
    telemetry: Telemetry, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    # a cache-write price above the input price: a negative write would make a negative cost
    with telemetry.llm_call("claude-3-5-sonnet-latest", "anthropic") as call:
        call.set_response(input_tokens=0, output_tokens=0, cache_write_tokens=-M)
    assert call.cost_usd == 0
    with telemetry.llm_call("gpt-4o-mini", "openai") as call:
        call.set_response(input_tokens=-M, output_tokens=M)
    assert call.cost_usd == pytest.approx(0.60)
    assert cost_total(registry) == pytest.approx(0.60)
    usage = [
        s.value
        for m in registry.collect()
        if m.name == n.M_GEN_AI_TOKEN_USAGE
        for s in m.samples
        if s.name.endswith("_sum")
    ]
    assert usage
    assert min(usage) >= 0
    assert not caplog.records  # no traceback in the log


def test_counts_beyond_reason_are_unpriced_never_nan(
    telemetry: Telemetry, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    run = telemetry.agent_run("helper", "gpt-4o-mini")
    with run, telemetry.llm_call("gpt-4o-mini", "openai") as call:
        call.set_response(input_tokens=10**400, output_tokens=1)
    assert call.cost_usd is None
    assert run.spend.total_usd is None
    with telemetry.llm_call("gpt-4o-mini", "openai") as call:
        call.set_response(input_tokens=10**30, output_tokens=1)
    assert call.cost_usd is None  # not 1.5e23 USD
    assert not math.isnan(cost_total(registry))
    assert cost_total(registry) == 0
    assert not caplog.records


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize("number", ["1e400", "1e999999999", "9" * 400, "2e6"])
def test_a_price_beyond_reason_is_refused_naming_the_entry(tmp_path: Path, number: str) -> None:
    path = write(
        tmp_path,
        '{"prices": [{"model": "m", "input_mtok": 1, "output_mtok": 1},'
        f' {{"model": "n", "input_mtok": {number}, "output_mtok": 1}}]}}',
    )
    with pytest.raises(ConfigurationError) as raised:
        PriceTable.from_file(path)
    message = str(raised.value)
    assert "prices[1].input_mtok" in message
    assert "\n" not in message
    assert len(message) < 300


def test_a_price_file_that_is_no_regular_file_is_refused_without_waiting(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "prices.fifo"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            PriceTable.from_file(fifo)
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(time_bound(5, 60))
    if reader.is_alive():  # the old code waits for a writer: give it one, then fail
        with open(fifo, "w") as writer:
            writer.write("{}")
        reader.join(time_bound(5, 60))
        pytest.fail("reading a FIFO waited for a writer")
    assert isinstance(outcome[0], ConfigurationError)
    assert "not a regular file" in str(outcome[0])


def test_provider_and_model_names_match_whatever_their_case_and_spaces(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        json.dumps(
            {
                "prices": [
                    {
                        "provider": " OpenAI",
                        "model": "GPT-4o-mini",
                        "input_mtok": 100,
                        "output_mtok": 1,
                    },
                    {"model": "my-llm ", "input_mtok": 2, "output_mtok": 2},
                ]
            }
        ),
    )
    table = PriceTable.from_file(path)
    price = table.price("openai", "gpt-4o-mini")
    assert price is not None
    assert price.cost(M, 0) == pytest.approx(100)
    assert table.price("vllm", "my-llm") is not None
    assert table.price("vllm", "My-LLM") is not None
