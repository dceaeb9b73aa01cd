"""``/v1/batches`` over real HTTP: submit, follow, read results, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from agentwatch.runtime.server import create_app
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry

pytestmark = pytest.mark.integration

Client = Callable[..., Awaitable[TestClient]]


async def follow(client: TestClient, url: str, until: set[str]) -> dict[str, Any]:
    for _ in range(500):  # bounded: ~10 s
        body: dict[str, Any] = await (await client.get(url)).json()
        if body["state"] in until:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"batch still {body['state']}")


async def test_submit_follow_and_read_results(aiohttp_client: Client, telemetry: Telemetry) -> None:
    client = await aiohttp_client(create_app(RuntimeSettings(), telemetry))
    tasks = [{"id": f"t{i}", "query": f"what is {i} * 3", "priority": i % 2} for i in range(12)]
    response = await client.post("/v1/batches", json={"tasks": tasks, "workers": 3})
    assert response.status == 202
    created = await response.json()
    body = await follow(client, created["url"], {"finished"})
    assert body["counts"] == {"completed": 12}
    outputs = {r["id"]: r["result"]["output"] for r in body["results"]}
    assert outputs["t7"] == "The answer is 21."


async def test_delete_cancels_a_running_batch(aiohttp_client: Client, telemetry: Telemetry) -> None:
    settings = replace(RuntimeSettings(), builtin_latency=0.2)
    client = await aiohttp_client(create_app(settings, telemetry))
    tasks = [{"id": str(i), "query": "hello"} for i in range(50)]
    created = await (await client.post("/v1/batches", json={"tasks": tasks, "workers": 2})).json()
    cancel = await client.delete(created["url"])
    assert cancel.status == 202
    body = await follow(client, created["url"], {"finished", "cancelled"})
    assert body["counts"].get("cancelled", 0) >= 48
    assert sum(body["counts"].values()) == 50


@pytest.mark.parametrize(
    ("payload", "status", "kind"),
    [
        ({"tasks": []}, 422, "invalid_request"),
        ({"tasks": [{"id": "a"}]}, 422, "invalid_tasks"),
        ({"tasks": [{"id": "a", "query": "x"}, {"id": "a", "query": "y"}]}, 422, "invalid_tasks"),
        ({"tasks": [{"id": "a", "query": "x"}], "workers": 0}, 422, "invalid_request"),
        ({"tasks": [{"id": "a", "query": "x"}], "timeout": -1}, 422, "invalid_request"),
    ],
)
async def test_bad_batches_are_refused(
    aiohttp_client: Client, telemetry: Telemetry, payload: dict[str, Any], status: int, kind: str
) -> None:
    client = await aiohttp_client(create_app(RuntimeSettings(), telemetry))
    response = await client.post("/v1/batches", json=payload)
    assert response.status == status
    assert (await response.json())["error"]["type"] == kind
    assert (await client.get("/v1/batches/nope")).status == 404
