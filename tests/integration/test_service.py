"""The service over real HTTP: runs, JSON errors, auth, traceparent, its own metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.runtime.server import create_app
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry

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
