"""Load shedding through the service: a run not admitted is 503 with Retry-After and a
JSON error, counted by reason; the default limit is adaptive and visible on /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from agentwatch.runtime.agents.admission import Admission
from agentwatch.runtime.service.app import RUNTIME_KEY, create_app
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry

Client = Callable[..., Awaitable[TestClient]]


def _shed(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("agentwatch_admission_shed_total", {"reason": reason}) or 0


async def _one_slot_held(
    aiohttp_client: Client, telemetry: Telemetry, **settings: float
) -> tuple[TestClient, Admission]:
    """A service with one run slot, held by a run (the caller releases it)."""
    app = create_app(RuntimeSettings(max_concurrent_runs=1, **settings), telemetry)
    client = await aiohttp_client(app)
    admission = app[RUNTIME_KEY].agent.admission
    await admission.acquire(deadline=asyncio.get_running_loop().time() + 5)
    return client, admission


async def _one_run_waiting(
    client: TestClient, admission: Admission
) -> asyncio.Task[ClientResponse]:
    """A run posted that waits in the queue (its answer, once admitted)."""
    queued = asyncio.create_task(client.post("/v1/runs", json={"input": "what is 2 + 2"}))
    for _ in range(500):  # bounded: until it waits in the queue
        if admission.waiting:
            break
        await asyncio.sleep(0.01)
    return queued


async def test_a_run_past_the_wait_queue_gets_503_with_retry_after(
    aiohttp_client: Client, telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    client, admission = await _one_slot_held(aiohttp_client, telemetry, admission_max_waiting=1)
    held = True
    try:
        queued = await _one_run_waiting(client, admission)
        refused = await client.post("/v1/runs", json={"input": "hi"})
        assert refused.status == 503
        assert int(refused.headers["Retry-After"]) >= 1
        error = (await refused.json())["error"]
        assert error["type"] == "overloaded"
        assert "waiting" in error["message"]
        admission.release()
        held = False
        assert (await queued).status == 200  # the one in the queue ran
    finally:
        if held:
            admission.release()
    assert _shed(registry, "too_many_waiting") == 1


async def test_a_run_waiting_past_the_admission_timeout_gets_503(
    aiohttp_client: Client, telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    client, admission = await _one_slot_held(aiohttp_client, telemetry, admission_timeout=0.2)
    try:
        refused = await client.post("/v1/runs", json={"input": "hi"})
    finally:
        admission.release()
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    assert (await refused.json())["error"]["type"] == "overloaded"
    assert _shed(registry, "timeout") == 1
    assert (await client.post("/v1/runs", json={"input": "hi"})).status == 200


async def test_the_default_limit_is_adaptive_and_on_metrics(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    app = create_app(RuntimeSettings(), telemetry)
    client = await aiohttp_client(app)
    assert app[RUNTIME_KEY].agent.admission.adaptive is not None
    answers = await asyncio.gather(
        *(client.post("/v1/runs", json={"input": f"what is {i} + 1"}) for i in range(10))
    )
    assert [a.status for a in answers] == [200] * 10
    text = await (await client.get("/metrics")).text()
    (limit,) = [
        line for line in text.splitlines() if line.startswith("agentwatch_admission_limit ")
    ]
    assert float(limit.split()[1]) >= 8  # adaptive: 64 to start with, never under 8
    assert "agentwatch_admission_wait_seconds_count 10.0" in text
    assert "agentwatch_admission_runs_in_flight 0.0" in text
    assert "agentwatch_admission_runs_waiting 0.0" in text


async def test_a_streamed_run_refused_at_once_gets_503_not_a_stream(
    aiohttp_client: Client, telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    client, admission = await _one_slot_held(aiohttp_client, telemetry, admission_max_waiting=1)
    try:
        queued = await _one_run_waiting(client, admission)
        refused = await client.post("/v1/runs", json={"input": "hi", "stream": True})
    finally:
        admission.release()
    assert (await queued).status == 200
    assert refused.status == 503
    assert refused.content_type == "application/json"
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await refused.json())["error"]["type"] == "overloaded"
    assert _shed(registry, "too_many_waiting") == 1
    streamed = await client.post("/v1/runs", json={"input": "hi", "stream": True})
    assert streamed.status == 200
    assert streamed.content_type == "text/event-stream"
    assert b"event: result" in await streamed.read()
