"""model_http: the model client tells a refused connection from a timeout, on the
span's ``error.type`` and the metric's label as in the classification (real sockets on
loopback: a closed port, a listener that never answers)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.runtime.agents.agent_runtime import build_chat_model
from agentwatch.runtime.provider_errors import FailureKind, classify
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def failed_call(telemetry: Telemetry, port: int) -> BaseException:
    settings = RuntimeSettings(model_timeout=0.5)
    base_url = f"http://127.0.0.1:{port}/v1"
    model = await asyncio.to_thread(build_chat_model, settings, telemetry, base_url)
    try:
        with pytest.raises(openai.APIError) as caught:
            await model.ainvoke("hi")
    finally:
        await model.http_async_client.aclose()
    return caught.value


def chat_error(exporter: InMemorySpanExporter, registry: CollectorRegistry) -> tuple[str, float]:
    [span] = [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]
    error = str((span.attributes or {})["error.type"])
    calls = [
        s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == "gen_ai_client_operation_duration_seconds_count"
        and s.labels.get("error_type") == error
    ]
    return error, sum(calls)


async def test_a_refused_connection_is_a_connection_error_not_a_timeout(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    """The SDK's aiohttp transport made it a connect timeout: ``APITimeoutError`` on the
    span and the label, for an endpoint that refused at once."""
    exc = await failed_call(telemetry, closed_port())
    assert isinstance(exc, openai.APIConnectionError)
    assert not isinstance(exc, openai.APITimeoutError)
    assert classify(exc).kind is FailureKind.CONNECTION
    assert chat_error(exporter, registry) == (type(exc).__name__, 1)
    assert "Timeout" not in type(exc).__name__


async def test_a_model_that_never_answers_is_still_a_timeout(
    telemetry: Telemetry,
    exporter: InMemorySpanExporter,
    registry: CollectorRegistry,
    silent_port: int,
) -> None:
    exc = await failed_call(telemetry, silent_port)
    assert isinstance(exc, openai.APITimeoutError)
    assert classify(exc).kind is FailureKind.TIMEOUT
    assert chat_error(exporter, registry) == (type(exc).__name__, 1)
    assert "Timeout" in type(exc).__name__
