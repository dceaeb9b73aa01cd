"""The service over real HTTP: runs, JSON errors, auth, traceparent, its own metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import httpx
import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer
from langchain_core.language_models import BaseChatModel
from langchain_core.outputs import ChatResult
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from agentwatch.runtime.agents.agent import Agent
from agentwatch.runtime.agents.agent_runtime import AgentRuntime
from agentwatch.runtime.builtin_model import ModelBehavior
from agentwatch.runtime.events import read_sse
from agentwatch.runtime.provider_errors import FailureKind, ProviderFailure, register
from agentwatch.runtime.service.app import create_app
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.runtime.tools import ToolRegistry
from agentwatch.telemetry import Telemetry
from tests.helpers import http_count
from tests.unit.test_provider_errors import httpx_status

pytestmark = pytest.mark.integration

Client = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def client(aiohttp_client: Client, telemetry: Telemetry) -> TestClient:
    return await aiohttp_client(create_app(RuntimeSettings(), telemetry))


async def test_post_run_answers(client: TestClient) -> None:
    response = await client.post("/v1/runs", json={"input": "what is 123 + 456"})
    assert response.status == 200
    body = await response.json()
    assert "579" in body["output"]
    assert body["tool_calls"][0]["name"] == "calculator"
    assert body["usage"]["total_tokens"] > 0
    assert len(body["trace_id"]) == 32
    assert body["sampled"] is True


async def test_traceparent_continues_the_callers_trace(
    client: TestClient, exporter: InMemorySpanExporter
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent_id = "00f067aa0ba902b7"
    response = await client.post(
        "/v1/runs",
        json={"input": "hello"},
        headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    assert (await response.json())["trace_id"] == trace_id
    agent = exporter.get_finished_spans()[-1]
    assert agent.name == "invoke_agent research_agent"
    assert agent.parent is not None
    assert format(agent.parent.span_id, "016x") == parent_id


@pytest.mark.parametrize(
    ("data", "headers", "status", "kind"),
    [
        (b"{oops", {"Content-Type": "application/json"}, 400, "invalid_json"),
        (b"[1, 2]", {"Content-Type": "application/json"}, 422, "invalid_request"),
        (b'{"input": 5}', {"Content-Type": "application/json"}, 422, "invalid_request"),
        (
            b'{"input": "hi", "evil": 1}',
            {"Content-Type": "application/json"},
            422,
            "invalid_request",
        ),
        (b'{"input": "   "}', {"Content-Type": "application/json"}, 422, "invalid_input"),
        (
            b"input=hi",
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
        (
            b'{"input": "' + b"a" * 2_000_000 + b'"}',
            {"Content-Type": "application/json"},
            413,
            "payload_too_large",
        ),
    ],
)
async def test_bad_requests_get_json_errors(
    client: TestClient, data: bytes, headers: dict[str, str], status: int, kind: str
) -> None:
    response = await client.post("/v1/runs", data=data, headers=headers)
    assert response.status == status
    body: dict[str, Any] = await response.json()
    assert body["error"]["type"] == kind
    assert "Traceback" not in str(body)
    assert (await client.get("/healthz")).status == 200  # and the server is still up


async def test_unknown_routes_and_methods_are_json_too(client: TestClient) -> None:
    missing = await client.get("/v1/nothing-here")
    assert missing.status == 404
    assert (await missing.json())["error"]["type"] == "not_found"
    wrong = await client.get("/v1/runs")
    assert wrong.status == 405
    assert (await wrong.json())["error"]["type"] == "method_not_allowed"


async def test_hostile_calculator_input_over_http(client: TestClient) -> None:
    for query in ["calculate __import__('os')", "calculate 9**9**9"]:
        response = await client.post("/v1/runs", json={"input": query})
        assert response.status == 200
        body = await response.json()
        assert body["tool_calls"][0]["error"] is True
        assert "Error:" in body["output"]
    ok = await client.post("/v1/runs", json={"input": "what is 2 + 2"})
    assert "4" in (await ok.json())["output"]


async def test_bearer_token_guards_v1_but_not_metrics(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    settings = replace(RuntimeSettings(), api_token="s3cret-token")
    client = await aiohttp_client(create_app(settings, telemetry))
    for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}]:
        response = await client.post("/v1/runs", json={"input": "hi"}, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "s3cret" not in await response.text()
    good = await client.post(
        "/v1/runs", json={"input": "hi"}, headers={"Authorization": "Bearer s3cret-token"}
    )
    assert good.status == 200
    assert (await client.get("/metrics")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_http_metrics_use_route_templates(
    client: TestClient, registry: CollectorRegistry
) -> None:
    await client.post("/v1/runs", json={"input": "hi"})
    await client.post("/v1/runs", data=b"{", headers={"Content-Type": "application/json"})
    await client.get("/v1/secret-path-12345")

    def count(route: str, status: str, method: str = "POST") -> float | None:
        return registry.get_sample_value(
            "http_server_request_duration_seconds_count",
            {
                "http_request_method": method,
                "http_route": route,
                "http_response_status_code": status,
            },
        )

    assert count("/v1/runs", "200") == 1
    assert count("/v1/runs", "400") == 1
    assert count("_OTHER", "404", "GET") == 1
    text = await (await client.get("/metrics")).text()
    assert "secret-path" not in text
    assert "hi" not in {line.split("{")[0] for line in text.splitlines()}


async def test_a_given_runtime_that_is_not_started_is_started_and_stopped_with_the_app(
    aiohttp_server: Callable[..., Awaitable[TestServer]], telemetry: Telemetry
) -> None:
    runtime = AgentRuntime(RuntimeSettings(), telemetry)
    server = await aiohttp_server(create_app(RuntimeSettings(), telemetry, runtime=runtime))
    async with TestClient(server) as client:
        assert (await client.get("/readyz")).status == 200
        response = await client.post("/v1/runs", json={"input": "what is 2 + 2"})
        assert response.status == 200, await response.text()
        assert runtime.started
    await server.close()  # the app's cleanup stops what the app started
    assert not runtime.started
    assert runtime.model_server is None


async def test_a_given_runtime_already_started_stays_its_owners(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    async with AgentRuntime(RuntimeSettings(), telemetry) as runtime:
        client = await aiohttp_client(create_app(RuntimeSettings(), telemetry, runtime=runtime))
        assert (await client.post("/v1/runs", json={"input": "hi"})).status == 200
        await client.close()
        assert runtime.started  # not the app's to stop
        assert (await runtime.agent.arun("hi")).output


async def _stream_error(client: TestClient, query: str) -> tuple[str, dict[str, Any]]:
    response = await client.post("/v1/runs", json={"input": query, "stream": True})
    events = [e async for e in read_sse(response.content)]
    return events[-1]


async def test_run_limits_have_their_own_codes_in_json_and_sse(
    aiohttp_client: Client, telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    """The step limit is 508 step_limit_exceeded (was a 500 internal_error); the run's
    own deadline is 504 run_timeout."""
    async with AgentRuntime(RuntimeSettings(), telemetry) as runtime:
        runtime.agent.max_steps = 2  # model, tools: no step left for the answer
        client = await aiohttp_client(create_app(RuntimeSettings(), telemetry, runtime=runtime))
        response = await client.post("/v1/runs", json={"input": "what is 2 + 2"})
        assert response.status == 508
        body = await response.json()
        assert body["error"]["type"] == "step_limit_exceeded"
        assert "2 steps" in body["error"]["message"]
        kind, data = await _stream_error(client, "what is 2 + 2")
        assert (kind, data["type"]) == ("error", "step_limit_exceeded")
        await client.close()
    slow = replace(RuntimeSettings(), run_timeout=0.3, builtin_latency=5.0)
    async with AgentRuntime(slow, telemetry) as runtime:
        client = await aiohttp_client(create_app(slow, telemetry, runtime=runtime))
        response = await client.post("/v1/runs", json={"input": "hello"})
        assert response.status == 504
        assert (await response.json())["error"] == {
            "type": "run_timeout",
            "message": "the run took longer than 0.3 s",
        }
        kind, data = await _stream_error(client, "hello")
        assert (kind, data["type"]) == ("error", "run_timeout")
        await client.close()
    assert (
        registry.get_sample_value(
            "http_server_request_duration_seconds_count",
            {
                "http_request_method": "POST",
                "http_route": "/v1/runs",
                "http_response_status_code": "500",
            },
        )
        is None
    )


async def test_a_timeout_inside_the_run_is_upstream_timeout_not_run_timeout(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    from tests.integration.test_agent import OwnDeadlineChat

    async with AgentRuntime(RuntimeSettings(), telemetry) as runtime:
        assert runtime.model_server is not None
        runtime.model_server.configure(ModelBehavior(latency=5.0, time_to_first_token=5.0))
        model = await asyncio.to_thread(
            OwnDeadlineChat,
            model="agentwatch-builtin",
            base_url=runtime.model_server.base_url,
            api_key=SecretStr("x"),
            max_retries=0,
            telemetry=telemetry,
            provider_name="agentwatch",
        )
        # The service, serving an agent on a user's model that has its own deadline.
        runtime._agent = Agent(
            model, ToolRegistry(), telemetry=telemetry, model_name="agentwatch-builtin"
        )
        client = await aiohttp_client(create_app(RuntimeSettings(), telemetry, runtime=runtime))
        response = await client.post("/v1/runs", json={"input": "hello"})
        assert response.status == 504
        assert (await response.json())["error"]["type"] == "upstream_timeout"
        kind, data = await _stream_error(client, "hello")
        assert (kind, data["type"]) == ("error", "upstream_timeout")
        await client.close()


async def test_aborted_json_runs_are_499_and_cancelled_never_500(
    aiohttp_client: Client,
    telemetry: Telemetry,
    registry: CollectorRegistry,
    exporter: InMemorySpanExporter,
) -> None:
    slow = replace(RuntimeSettings(), builtin_latency=10.0)
    async with AgentRuntime(slow, telemetry) as runtime:
        client = await aiohttp_client(create_app(slow, telemetry, runtime=runtime))
        assert runtime.model_server is not None
        aborted = 3
        for n in range(1, aborted + 1):
            _, writer = await asyncio.open_connection(client.host, client.port)
            body = b'{"input": "hello"}'
            writer.write(
                b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            for _ in range(1000):  # bounded: until the run's model request is in flight
                if runtime.model_server.requests >= n:
                    break
                await asyncio.sleep(0.01)
            writer.close()  # the client goes away mid-run
            await writer.wait_closed()
        for _ in range(1000):  # bounded: until every aborted request is recorded
            if http_count(registry, "499") == aborted:
                break
            await asyncio.sleep(0.01)
        await client.close()
    assert http_count(registry, "499") == aborted
    assert http_count(registry, "500") == 0
    agents = [s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent")]
    assert len(agents) == aborted
    assert all((s.attributes or {})["agentwatch.outcome"] == "cancelled" for s in agents)
    assert (
        registry.get_sample_value(
            "gen_ai_invoke_agent_duration_seconds_count",
            {
                "gen_ai_agent_name": "research_agent",
                "gen_ai_request_model": "agentwatch-builtin",
                "error_type": "cancelled",
            },
        )
        == aborted
    )


async def test_a_run_that_was_not_sampled_returns_no_trace_id(
    aiohttp_client: Client, exporter: InMemorySpanExporter
) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(tracer_provider=provider, registry=CollectorRegistry())
    client = await aiohttp_client(create_app(RuntimeSettings(), telemetry))
    body = await (await client.post("/v1/runs", json={"input": "what is 2 + 2"})).json()
    assert "4" in body["output"]
    assert (body["trace_id"], body["sampled"]) == ("", False)
    response = await client.post("/v1/runs", json={"input": "hello", "stream": True})
    kind, result = [e async for e in read_sse(response.content)][-1]
    assert (kind, result["trace_id"], result["sampled"]) == ("result", "", False)
    assert exporter.get_finished_spans() == ()  # indeed, no backend has it
    provider.shutdown()


class RaisingChat(BaseChatModel):
    """A user's chat model on some provider's client, failing with ``error``."""

    error: Exception

    @property
    def _llm_type(self) -> str:
        return "raising"

    def _generate(self, messages: Any, stop: Any = None, **kwargs: Any) -> ChatResult:
        raise self.error

    async def _agenerate(self, messages: Any, stop: Any = None, **kwargs: Any) -> ChatResult:
        raise self.error


class QuotaExhausted(Exception):
    """A made-up provider's error, classified once registered."""


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (httpx_status(503), 502, "model_error"),
        (httpx.ConnectError("refused"), 502, "model_error"),
        (aiohttp.ServerDisconnectedError(), 502, "model_error"),
        (httpx.ReadTimeout("slow"), 504, "upstream_timeout"),
        (
            openai.APITimeoutError(request=httpx.Request("POST", "http://x")),
            504,
            "upstream_timeout",
        ),
        (TimeoutError(), 504, "upstream_timeout"),
        (QuotaExhausted("quota"), 502, "model_error"),
        (KeyError("a bug"), 500, "internal_error"),
        (ConnectionResetError(), 500, "internal_error"),  # Python's own: the model's? unknown
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
async def test_a_providers_failure_is_answered_by_its_kind_in_json_and_sse(
    aiohttp_client: Client, telemetry: Telemetry, error: Exception, status: int, kind: str
) -> None:
    """Any provider client's failure, classified once (runtime/provider_errors.py): a
    timeout is 504 upstream_timeout, every other failure 502 model_error; an error no
    classifier knows is a bug (500)."""
    runtime = AgentRuntime(RuntimeSettings(), telemetry)
    runtime._agent = Agent(
        RaisingChat(error=error), ToolRegistry(), telemetry=telemetry, model_name="raising"
    )
    unregister = register(QuotaExhausted, lambda e: ProviderFailure.of(FailureKind.RATE_LIMITED))
    try:
        client = await aiohttp_client(create_app(RuntimeSettings(), telemetry, runtime=runtime))
        response = await client.post("/v1/runs", json={"input": "hello"})
        assert response.status == status
        body = await response.json()
        assert body["error"]["type"] == kind
        if kind == "model_error":
            assert body["error"]["message"].startswith(f"The model failed: {type(error).__name__}.")
        stream_kind, data = await _stream_error(client, "hello")
        assert (stream_kind, data["type"]) == ("error", kind)
    finally:
        unregister()
