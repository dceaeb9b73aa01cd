"""Secure defaults: loopback, tokens, and no secret in logs, spans or error bodies."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch.runtime.builtin_model import BuiltinModelServer, ModelBehavior
from agentwatch.runtime.service.app import create_app
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry

Client = Callable[..., Awaitable[TestClient]]
API_KEY = "sk-test-do-not-leak-0123456789"
TOKEN = "token-do-not-leak-9876543210"


def test_defaults_bind_loopback() -> None:
    settings = RuntimeSettings.from_env({})
    assert settings.host == "127.0.0.1"
    assert settings.api_token is None
    assert "sk-" not in repr(RuntimeSettings(api_key=API_KEY, api_token=TOKEN))
    assert TOKEN not in repr(RuntimeSettings(api_key=API_KEY, api_token=TOKEN))


async def test_metrics_token_guards_metrics_only(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    settings = replace(RuntimeSettings(), metrics_token="scrape-secret")
    client = await aiohttp_client(create_app(settings, telemetry))
    assert (await client.get("/metrics")).status == 401
    ok = await client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert ok.status == 200
    assert (await client.get("/healthz")).status == 200
    assert (await client.post("/v1/runs", json={"input": "hi"})).status == 200


async def test_no_secret_in_logs_spans_or_error_bodies(
    aiohttp_client: Client,
    telemetry: Telemetry,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An OpenAI-compatible endpoint (the builtin model, failing) with a real-looking key
    and an API token: neither appears anywhere a user or an attacker could read."""
    async with BuiltinModelServer(ModelBehavior(error_rate=1.0, fail_status=401)) as model:
        settings = replace(
            RuntimeSettings(), api_key=API_KEY, base_url=model.base_url, api_token=TOKEN
        )
        client = await aiohttp_client(create_app(settings, telemetry))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with caplog.at_level(logging.DEBUG):
            failed = await client.post("/v1/runs", json={"input": "hello"}, headers=headers)
            wrong = await client.post(
                "/v1/runs", json={"input": "hello"}, headers={"Authorization": f"Bearer {TOKEN}x"}
            )
            bodies = await failed.text() + await wrong.text()
            metrics = await (await client.get("/metrics")).text()
    assert failed.status == 502
    assert wrong.status == 401
    spans = " ".join(
        str(dict(s.attributes or {})) + str(s.events) for s in exporter.get_finished_spans()
    )
    for secret in (API_KEY, TOKEN):
        assert secret not in bodies
        assert secret not in caplog.text
        assert secret not in spans
        assert secret not in metrics
