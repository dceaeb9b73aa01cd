"""Cost end to end: the agent over real HTTP to the builtin model answering as gpt-4o-mini."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestClient
from langchain.agents import create_agent
from langchain_core.tools import tool
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from agentwatch.runtime.agents.agent_runtime import AgentRuntime
from agentwatch.runtime.builtin_model import BuiltinModelServer, Reply, ToolCall
from agentwatch.runtime.builtin_model.in_process import BuiltinChatModel
from agentwatch.runtime.events import read_sse
from agentwatch.runtime.langchain.callbacks import AgentwatchCallbackHandler
from agentwatch.runtime.langchain.chat_model import InstrumentedChatModel, InstrumentedChatOpenAI
from agentwatch.runtime.langchain.instrumentor import AgentwatchInstrumentor
from agentwatch.runtime.service.app import create_app
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry
from agentwatch.telemetry import names as n
from tests.helpers import run_cli

pytestmark = pytest.mark.integration

Client = Callable[..., Awaitable[TestClient]]


@tool
def stock(item: str) -> str:
    """Look an item up in the shop's stock."""
    return f"{item}: in stock"


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


CACHE_READ_PER_TOKEN = 0.075 / 1_000_000  # gpt-4o-mini's cached input


@contextlib.asynccontextmanager
async def mini_model(
    server: BuiltinModelServer, telemetry: Telemetry
) -> AsyncIterator[InstrumentedChatOpenAI]:
    http = openai.DefaultAsyncHttpxClient()
    try:
        yield InstrumentedChatOpenAI(
            model="gpt-4o-mini",
            base_url=server.base_url,
            api_key=SecretStr("k"),
            max_retries=0,
            stream_usage=True,
            http_async_client=http,
            telemetry=telemetry,
        )
    finally:
        await http.aclose()


CONVERSATION = [
    ("system", "You answer questions about the corpus in a few words."),
    ("user", "What does the search tool read?"),
    ("assistant", "Markdown files of the corpus."),
    ("user", "And the calculator?"),
]


@pytest.mark.parametrize("stream", [False, True])
async def test_cached_input_tokens_the_builtin_model_reports_are_priced_at_the_cache_price(
    telemetry: Telemetry, exporter: InMemorySpanExporter, stream: bool
) -> None:
    async with BuiltinModelServer() as server, mini_model(server, telemetry) as model:
        if stream:
            chunks = [c async for c in model.astream(CONVERSATION, prompt_cache_key="corpus-qa")]
            answer = chunks[0]
            for chunk in chunks[1:]:
                answer += chunk
        else:
            answer = await model.ainvoke(CONVERSATION, prompt_cache_key="corpus-qa")
    usage = answer.usage_metadata
    assert usage is not None
    cached = usage.get("input_token_details", {}).get("cache_read", 0)
    assert 0 < cached < usage["input_tokens"]  # the earlier messages, not the last one

    (span,) = exporter.get_finished_spans()
    attrs = span.attributes or {}
    assert attrs[n.GEN_AI_USAGE_INPUT_TOKENS] == usage["input_tokens"]  # cached included
    assert attrs[n.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == cached
    expected = (
        (usage["input_tokens"] - cached) * INPUT_PER_TOKEN
        + cached * CACHE_READ_PER_TOKEN
        + usage["output_tokens"] * OUTPUT_PER_TOKEN
    )
    assert attrs[n.AGENTWATCH_USAGE_COST_AMOUNT] == pytest.approx(expected)


async def test_without_a_prompt_cache_key_nothing_is_reported_cached(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    async with BuiltinModelServer() as server, mini_model(server, telemetry) as model:
        await model.ainvoke(CONVERSATION)
    attrs = exporter.get_finished_spans()[0].attributes or {}
    assert n.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS not in attrs


async def test_the_builtin_model_reports_cached_tokens_in_openais_shape_when_asked() -> None:
    messages = [{"role": r, "content": c} for r, c in CONVERSATION]
    async with BuiltinModelServer() as server, aiohttp.ClientSession() as http:

        async def usage(**extra: object) -> tuple[int, dict[str, object]]:
            body = {"model": "gpt-4o-mini", "messages": messages, **extra}
            async with http.post(f"{server.base_url}/chat/completions", json=body) as r:
                answer = await r.json()
                return r.status, answer.get("usage") or answer

        status, plain = await usage()
        assert status == 200
        assert "prompt_tokens_details" not in plain
        status, cached = await usage(prompt_cache_key="k")
        assert status == 200
        assert cached["prompt_tokens"] == plain["prompt_tokens"]
        details = cached["prompt_tokens_details"]
        assert isinstance(details, dict)
        assert 0 < details["cached_tokens"] < plain["prompt_tokens"]  # type: ignore[operator]
        status, error = await usage(prompt_cache_key=7)
        assert status == 400
        assert error["error"]["param"] == "prompt_cache_key"  # type: ignore[index]


def test_agentwatch_run_prints_what_the_run_cost(tmp_path: Path) -> None:
    out = run_cli("run", "what is 123 + 456", AGENTWATCH_MODEL="gpt-4o-mini")
    assert out.returncode == 0, out.stderr
    last = out.stdout.splitlines()[-1]
    tokens = re.search(r"tokens: (\d+) in, (\d+) out  cost: \$(\d+\.\d{6})$", last)
    assert tokens is not None, last
    expected = int(tokens[1]) * INPUT_PER_TOKEN + int(tokens[2]) * OUTPUT_PER_TOKEN
    assert float(tokens[3]) == pytest.approx(expected, abs=1e-6)
    # the builtin model's own name has no price; a user's price file gives it one
    out = run_cli("run", "what is 1 + 1")
    assert out.stdout.splitlines()[-1].endswith("cost: unpriced"), out.stdout
    prices = tmp_path / "prices.json"
    prices.write_text(
        '{"prices": [{"model": "agentwatch-builtin", "input_mtok": 1000, "output_mtok": 1000}]}'
    )
    out = run_cli("run", "what is 1 + 1", AGENTWATCH_PRICES_FILE=str(prices))
    tokens = re.search(r"tokens: (\d+) in, (\d+) out  cost: \$(\d+\.\d{6})$", out.stdout)
    assert tokens is not None, out.stdout
    assert float(tokens[3]) == pytest.approx((int(tokens[1]) + int(tokens[2])) / 1000)


def test_a_bad_price_file_stops_the_command_with_one_line(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text('{"prices": [{"model": "m", "input_mtok": -1, "output_mtok": 1}]}')
    out = run_cli("run", "what is 1 + 1", AGENTWATCH_PRICES_FILE=str(prices))
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        f"agentwatch run: AGENTWATCH_PRICES_FILE='{prices}': prices[0].input_mtok must be a "
        "number >= 0 and <= 1000000 (USD per million tokens), got -1"
    ]


async def test_v1_runs_budget_ends_a_run_with_402_budget_exceeded_in_json_and_sse(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    capped = RuntimeSettings(model="gpt-4o-mini", run_budget_usd=1e-9)  # one call spends it
    client = await aiohttp_client(create_app(capped, telemetry))
    # the arithmetic takes two model calls: the second is never made
    response = await client.post("/v1/runs", json={"input": "what is 123 + 456"})
    assert response.status == 402
    error = (await response.json())["error"]
    assert error["type"] == "budget_exceeded"
    assert "budget" in error["message"]
    # a run cannot ask for more than the service's budget
    asked = {"input": "what is 123 + 456", "budget_usd": 100}
    assert (await client.post("/v1/runs", json=asked)).status == 402
    response = await client.post("/v1/runs", json={**asked, "stream": True})
    assert response.status == 200
    events = [e async for e in read_sse(response.content)]
    assert events[-1][0] == "error"
    assert events[-1][1]["type"] == "budget_exceeded"
    # a bad budget is the caller's mistake
    bad = await client.post("/v1/runs", json={"input": "hi", "budget_usd": -1})
    assert bad.status == 422


async def test_v1_runs_budget_a_run_asks_for_and_its_cost(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    client = await aiohttp_client(create_app(RuntimeSettings(model="gpt-4o-mini"), telemetry))
    tight = await client.post("/v1/runs", json={"input": "what is 1 + 2", "budget_usd": 1e-9})
    assert tight.status == 402
    roomy = await client.post("/v1/runs", json={"input": "what is 1 + 2", "budget_usd": 1.0})
    assert roomy.status == 200
    usage = (await roomy.json())["usage"]
    expected = usage["input_tokens"] * INPUT_PER_TOKEN + usage["output_tokens"] * OUTPUT_PER_TOKEN
    assert usage["cost_usd"] == pytest.approx(expected)


async def batch_end(client: TestClient, url: str) -> dict[str, Any]:
    """The batch's summary once it stopped running (or after ~10 s)."""
    summary: dict[str, Any] = {}
    for _ in range(500):  # bounded: ~10 s
        summary = await (await client.get(url)).json()
        if summary["state"] != "running":
            break
        await asyncio.sleep(0.02)
    return summary


async def test_v1_batches_shows_cost_and_stops_at_its_budget(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    client = await aiohttp_client(create_app(RuntimeSettings(model="gpt-4o-mini"), telemetry))
    tasks = [{"id": f"t{i}", "query": f"what is {i} + 1"} for i in range(6)]
    started = await client.post(
        "/v1/batches", json={"tasks": tasks, "workers": 1, "budget_usd": 1e-9}
    )
    assert started.status == 202
    url = (await started.json())["url"]
    summary = await batch_end(client, url)
    assert summary["state"] == "finished"
    assert summary["budget_exceeded"] is True
    assert summary["budget_usd"] == 1e-9
    assert summary["counts"] == {"completed": 1, "cancelled": 5}
    results = (await (await client.get(f"{url}/results")).json())["results"]
    (done,) = [r for r in results if r["status"] == "completed"]
    assert done["cost_usd"] == pytest.approx(done["result"]["usage"]["cost_usd"])
    assert summary["cost_usd"] == pytest.approx(done["cost_usd"])
    bad = await client.post("/v1/batches", json={"tasks": tasks, "budget_usd": "1"})
    assert bad.status == 422


def test_agentwatch_batch_budget_stops_then_resumes(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(f'{{"id": "t{i}", "query": "what is {i} + 1"}}\n' for i in range(4)))
    out = tmp_path / "results.jsonl"
    args = ("batch", str(tasks), "--out", str(out), "--workers", "1")
    first = run_cli(*args, "--budget-usd", "0.000000001", AGENTWATCH_MODEL="gpt-4o-mini")
    assert first.returncode == 3, first.stderr  # stopped early, resumable
    assert "budget spent" in first.stderr
    assert "3 task(s) not run" in first.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    done = [r for r in records if r["status"] == "completed"]
    assert len(done) == 1
    assert done[0]["cost_usd"] > 0
    second = run_cli(*args, AGENTWATCH_MODEL="gpt-4o-mini")  # no budget: the rest run
    assert second.returncode == 0, second.stderr
    costs = re.search(r"cost \$(\d+\.\d{6})", second.stderr)
    assert costs is not None, second.stderr
    final = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(final) == ["t0", "t1", "t2", "t3"]
    assert all(r["status"] == "completed" for r in final.values())
    total = sum(r["cost_usd"] for r in final.values())
    assert float(costs[1]) == pytest.approx(total, abs=1e-6)  # the batch's, resumed ones too


def assert_the_shop_run_cost_its_two_calls(
    exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    """The ``shop`` run's two gpt-4o-mini calls, priced; their sum is the run's total
    and what the cost counter counted under the agent's name."""
    spans = exporter.get_finished_spans()
    calls = [s.attributes or {} for s in spans if s.name == "chat gpt-4o-mini"]
    assert len(calls) == 2
    total = sum(float(c[n.AGENTWATCH_USAGE_COST_AMOUNT]) for c in calls)  # type: ignore[arg-type]
    (run,) = [s.attributes or {} for s in spans if s.name == "invoke_agent shop"]
    assert run[n.AGENTWATCH_RUN_COST_AMOUNT] == pytest.approx(total)
    labels = {
        n.L_GEN_AI_PROVIDER_NAME: "agentwatch",
        n.L_GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        n.L_GEN_AI_AGENT_NAME: "shop",
    }
    assert registry.get_sample_value(f"{n.M_COST}_total", labels) == pytest.approx(total)


async def test_a_users_own_graph_under_the_instrumentor_gets_its_runs_cost(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    model = BuiltinChatModel(
        model_name="gpt-4o-mini",
        script=[Reply("", (ToolCall("", "lookup", '{"item": "socks"}'),)), "In stock."],
    )
    instrumentor = AgentwatchInstrumentor()
    instrumentor.instrument(telemetry=telemetry)
    try:
        await create_agent(model, tools=[stock], name="shop").ainvoke(
            {"messages": [{"role": "user", "content": "Are socks in stock?"}]}
        )
    finally:
        instrumentor.uninstrument()
    assert_the_shop_run_cost_its_two_calls(exporter, registry)


class InstrumentedBuiltin(InstrumentedChatModel, BuiltinChatModel):
    """A model that records its own calls (its boundary, not the handler)."""


@pytest.mark.parametrize("model_class", [BuiltinChatModel, InstrumentedBuiltin])
async def test_a_users_own_graph_under_the_callback_handler_gets_its_runs_cost(
    model_class: type[BuiltinChatModel],
    telemetry: Telemetry,
    exporter: InMemorySpanExporter,
    registry: CollectorRegistry,
) -> None:
    """The handler records the run; the calls are the handler's or the model's own."""
    model = model_class(
        model_name="gpt-4o-mini",
        script=[Reply("", (ToolCall("", "stock", '{"item": "socks"}'),)), "In stock."],
    )
    if isinstance(model, InstrumentedBuiltin):
        model.telemetry = telemetry
    await create_agent(model, tools=[stock], name="shop").ainvoke(
        {"messages": [{"role": "user", "content": "Are socks in stock?"}]},
        {"callbacks": [AgentwatchCallbackHandler(telemetry=telemetry)]},
    )
    assert_the_shop_run_cost_its_two_calls(exporter, registry)


async def test_v1_batches_with_nothing_priced_has_no_cost_never_0(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    client = await aiohttp_client(create_app(RuntimeSettings(), telemetry))  # builtin: unpriced
    tasks = [{"id": f"t{i}", "query": f"what is {i} + 1"} for i in range(2)]
    started = await client.post("/v1/batches", json={"tasks": tasks, "workers": 1})
    assert started.status == 202
    summary = await batch_end(client, (await started.json())["url"])
    assert summary["state"] == "finished"
    assert summary["cost_usd"] is None  # not 0.0
    assert summary["unpriced_calls"] >= 2


async def test_budget_exceeded_says_what_was_spent_of_what_budget_and_that_it_was_capped(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    capped = RuntimeSettings(model="gpt-4o-mini", run_budget_usd=1e-9)
    client = await aiohttp_client(create_app(capped, telemetry))
    asked = {"input": "what is 123 + 456", "budget_usd": 100}
    response = await client.post("/v1/runs", json=asked)
    assert response.status == 402
    error = (await response.json())["error"]
    assert error["budget_usd"] == 1e-9
    assert error["spent_usd"] > 1e-9
    assert error["budget_capped_usd"] == 1e-9  # it asked for 100
    response = await client.post("/v1/runs", json={**asked, "stream": True})
    events = [e async for e in read_sse(response.content)]
    assert events[-1][0] == "error"
    assert events[-1][1]["budget_usd"] == 1e-9
    assert events[-1][1]["spent_usd"] > 1e-9


async def test_a_budget_that_cannot_stop_unpriced_calls_says_so(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    # the builtin model's own name has no price: its calls cannot be stopped by a budget
    client = await aiohttp_client(create_app(RuntimeSettings(run_budget_usd=1e-9), telemetry))
    response = await client.post("/v1/runs", json={"input": "what is 1 + 2"})
    assert response.status == 200  # never stopped: nothing it spends is known
    body = await response.json()
    assert "has no price" in body["budget_warning"]
    assert body["usage"]["cost_usd"] is None
    assert body["usage"]["unpriced_calls"] >= 1
    tasks = [{"id": "t0", "query": "what is 1 + 1"}]
    started = await client.post("/v1/batches", json={"tasks": tasks, "budget_usd": 1.0})
    assert started.status == 202
    assert "has no price" in (await started.json())["budget_warning"]
    summary = await (await client.get((await started.json())["url"])).json()
    assert "has no price" in summary["budget_warning"]
    # a priced model: no warning
    priced = await aiohttp_client(create_app(RuntimeSettings(model="gpt-4o-mini"), telemetry))
    roomy = await priced.post("/v1/runs", json={"input": "what is 1 + 2", "budget_usd": 1.0})
    assert "budget_warning" not in await roomy.json()


def test_agentwatch_batch_warns_when_its_budget_cannot_stop_unpriced_calls(
    tmp_path: Path,
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "t0", "query": "what is 1 + 1"}\n')
    out = tmp_path / "results.jsonl"
    done = run_cli("batch", str(tasks), "--out", str(out), "--budget-usd", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any("warning" in line and "has no price" in line for line in lines), done.stderr
    assert any("cost - (" in line and "unpriced" in line for line in lines), done.stderr
