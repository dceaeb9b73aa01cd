"""Streaming over real HTTP: SSE events in order, TTFT metrics, disconnects cancel runs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from langchain_core.messages import HumanMessage
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.runtime.agents.agent_runtime import AgentRuntime, build_chat_model
from agentwatch.runtime.builtin_model import BuiltinModelServer, ModelBehavior
from agentwatch.runtime.events import read_sse
from agentwatch.runtime.retry import RetryPolicy
from agentwatch.runtime.service.app import create_app
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry
from tests.helpers import http_count, time_bound

pytestmark = pytest.mark.integration

Client = Callable[..., Awaitable[TestClient]]


def sse_events(response: ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    return read_sse(response.content)


async def start(
    aiohttp_client: Client, telemetry: Telemetry, behavior: ModelBehavior | None = None
) -> tuple[TestClient, AgentRuntime]:
    runtime = AgentRuntime(RuntimeSettings(), telemetry, model_behavior=behavior)
    await runtime.start()
    client = await aiohttp_client(create_app(RuntimeSettings(), telemetry, runtime=runtime))
    return client, runtime


@pytest.mark.parametrize("query", ["what is 123 + 456", "search for exemplars", "hello"])
async def test_sse_text_events_arrive_in_order_and_match_the_plain_answer(
    aiohttp_client: Client, telemetry: Telemetry, query: str
) -> None:
    client, runtime = await start(aiohttp_client, telemetry)
    try:
        plain = await (await client.post("/v1/runs", json={"input": query})).json()
        response = await client.post("/v1/runs", json={"input": query, "stream": True})
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [e async for e in sse_events(response)]
    finally:
        await runtime.stop()
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "result"
    texts = [data["text"] for kind, data in events if kind == "text"]
    assert len(texts) > 3
    assert kinds.index("text") < kinds.index("result")
    assert "".join(texts) == plain["output"] == events[-1][1]["output"]
    if plain["tool_calls"]:
        assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("text")


async def test_accept_header_alone_asks_for_a_stream(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    client, runtime = await start(aiohttp_client, telemetry)
    try:
        response = await client.post(
            "/v1/runs", json={"input": "hello"}, headers={"Accept": "text/event-stream"}
        )
        events = [kind async for kind, _ in sse_events(response)]
    finally:
        await runtime.stop()
    assert events[-1] == "result"


async def test_time_to_first_chunk_is_recorded_with_the_runs_exemplar(
    aiohttp_client: Client,
    telemetry: Telemetry,
    registry: CollectorRegistry,
    exporter: InMemorySpanExporter,
) -> None:
    client, runtime = await start(aiohttp_client, telemetry, ModelBehavior(time_to_first_token=0.2))
    try:
        started = time.perf_counter()
        response = await client.post("/v1/runs", json={"input": "hello", "stream": True})
        events = [e async for e in sse_events(response)]
        elapsed = time.perf_counter() - started
    finally:
        await runtime.stop()
    trace_id = events[-1][1]["trace_id"]
    labels = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "agentwatch",
        "gen_ai_request_model": "agentwatch-builtin",
        "error_type": "",
    }
    name = "gen_ai_client_operation_time_to_first_chunk_seconds"
    assert registry.get_sample_value(f"{name}_count", labels) == 1
    ttfc = registry.get_sample_value(f"{name}_sum", labels)
    assert ttfc is not None
    assert 0.2 <= ttfc <= elapsed
    exemplars = [
        s.exemplar.labels["trace_id"]
        for m in registry.collect()
        for s in m.samples
        if s.name == f"{name}_bucket" and s.exemplar is not None
    ]
    assert exemplars == [trace_id]
    chat = next(s for s in exporter.get_finished_spans() if s.name.startswith("chat"))
    assert [e.name for e in chat.events] == ["gen_ai.first_chunk"]
    assert (chat.attributes or {})["gen_ai.response.time_to_first_chunk"] == pytest.approx(ttfc)
    gaps = registry.get_sample_value(
        "gen_ai_client_operation_time_per_output_chunk_seconds_count", labels
    )
    assert gaps is not None
    assert gaps >= 5


async def test_client_disconnect_cancels_the_run(
    aiohttp_client: Client, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    slow = ModelBehavior(tokens_per_second=20)  # ~2 s for the whole answer
    client, runtime = await start(aiohttp_client, telemetry, slow)
    before = asyncio.all_tasks()
    try:
        response = await client.post("/v1/runs", json={"input": "hello", "stream": True})
        seen = 0
        async for kind, _ in sse_events(response):
            seen += kind == "text"
            if seen == 3:
                break
        response.close()  # the client goes away mid-stream
        closed = time.perf_counter()
        agent_span = None
        for _ in range(100):  # bounded: at most ~1 s
            agent_span = next(
                (s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent")),
                None,
            )
            if agent_span is not None:
                break
            await asyncio.sleep(0.01)
        assert agent_span is not None, "the run was not cancelled within a second"
        assert time.perf_counter() - closed < time_bound(strict=1.0, generous=10.0)
        assert (agent_span.attributes or {})["agentwatch.outcome"] == "cancelled"
        for _ in range(100):  # let the server's handler task finish its teardown
            leftover = asyncio.all_tasks() - before - {asyncio.current_task()}
            if not leftover:
                break
            await asyncio.sleep(0.01)
        assert not leftover, leftover
    finally:
        await runtime.stop()


async def test_a_failing_model_ends_the_stream_with_an_error_event(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    broken = ModelBehavior(error_rate=1.0, fail_status=500)
    client, runtime = await start(aiohttp_client, telemetry, broken)
    try:
        response = await client.post("/v1/runs", json={"input": "hello", "stream": True})
        events = [e async for e in sse_events(response)]
    finally:
        await runtime.stop()
    kind, data = events[-1]
    assert kind == "error"
    assert data["type"] == "model_error"
    assert "Traceback" not in json.dumps(data)


@pytest.mark.parametrize("handler_cancellation", [True, False])
async def test_dropped_streams_are_499_and_cancelled_never_500(
    telemetry: Telemetry,
    registry: CollectorRegistry,
    exporter: InMemorySpanExporter,
    handler_cancellation: bool,
) -> None:
    """A client that drops its stream is recorded as 499 whether aiohttp cancels the
    handler (as `agentwatch serve` asks) or the next write fails; the run as cancelled."""
    slow = ModelBehavior(tokens_per_second=20)  # ~2 s for the whole answer
    dropped = 3
    async with AgentRuntime(RuntimeSettings(), telemetry, model_behavior=slow) as runtime:
        app = create_app(RuntimeSettings(), telemetry, runtime=runtime)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=handler_cancellation)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/runs"
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(dropped):
                    response = await session.post(url, json={"input": "hello", "stream": True})
                    async for kind, _ in sse_events(response):
                        if kind == "text":
                            break
                    response.close()  # the client goes away mid-stream
            for _ in range(1000):  # bounded: until every dropped stream is recorded
                if http_count(registry, "499") == dropped:
                    break
                await asyncio.sleep(0.01)
        finally:
            await runner.cleanup()
    assert http_count(registry, "499") == dropped
    assert http_count(registry, "500") == 0
    assert http_count(registry, "200") == 0
    agents = [s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent")]
    assert len(agents) == dropped
    assert all((s.attributes or {})["agentwatch.outcome"] == "cancelled" for s in agents)


FIRST_CHUNK_COUNT = "gen_ai_client_operation_time_to_first_chunk_seconds_count"


def labels_of() -> dict[str, str]:
    return {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "agentwatch",
        "gen_ai_request_model": "agentwatch-builtin",
    }


async def test_a_chat_stream_closed_early_ends_its_span_at_once_as_cancelled(
    telemetry: Telemetry, registry: CollectorRegistry, exporter: InMemorySpanExporter
) -> None:
    slow = ModelBehavior(tokens_per_second=20)
    async with BuiltinModelServer(slow) as server:
        settings = RuntimeSettings()
        model = await asyncio.to_thread(
            build_chat_model, settings, telemetry, server.base_url, RetryPolicy()
        )
        # Streamed inside a call (as LangGraph's stream_mode="messages" has it): the
        # run cancelled mid-stream ends the span then and there, as cancelled.
        call = asyncio.ensure_future(model.ainvoke([HumanMessage("hello")], stream=True))
        first = {**labels_of(), "error_type": ""}
        for _ in range(1000):  # bounded: until the first chunk has arrived
            if registry.get_sample_value(FIRST_CHUNK_COUNT, first):
                break
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        (chat,) = exporter.get_finished_spans()
        assert (chat.attributes or {})["gen_ai.request.stream"] is True
        assert chat.name == "chat agentwatch-builtin"
        assert (chat.attributes or {})["agentwatch.outcome"] == "cancelled"

        # And through the public API: a consumer that stops reading `astream` early.
        stream = model.astream("hello")
        async with aclosing(stream):
            await anext(stream)
        for _ in range(100):  # bounded: LangChain leaves the inner stream to finalise
            if len(exporter.get_finished_spans()) == 2:
                break
            await asyncio.sleep(0.01)
        second = exporter.get_finished_spans()[1]
        assert (second.attributes or {})["agentwatch.outcome"] == "cancelled"
    labels = labels_of()
    name = "gen_ai_client_operation_duration_seconds_count"
    assert registry.get_sample_value(name, {**labels, "error_type": "cancelled"}) == 2
    assert registry.get_sample_value(name, {**labels, "error_type": ""}) is None
