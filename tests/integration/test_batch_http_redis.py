"""``/v1/batches`` on Redis (AGENTWATCH_REDIS_URL): a batch posted to one replica is
answered by another, its results paged once each, and it survives the first replica
going away; cancel works across replicas."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from agentwatch.runtime.service.app import create_app
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry
from tests.integration.test_batch_http import Client, all_results, follow
from tests.redis_helpers import RedisServer

pytestmark = pytest.mark.integration


async def ttl(server: RedisServer, key: str) -> int:
    """Seconds before ``key`` expires (a finished or cancelled batch's keys do, in a day)."""
    client = aioredis.Redis.from_url(server.url)
    try:
        return int(await client.ttl(key))
    finally:
        await client.aclose()


def tasks(count: int) -> list[dict[str, Any]]:
    return [{"id": f"t{i}", "query": f"what is {i} * 3", "priority": i % 2} for i in range(count)]


async def test_any_replica_answers_for_a_batch_posted_to_another(
    redis_server: RedisServer, aiohttp_client: Client, telemetry: Telemetry
) -> None:
    """Replica a takes the batch and goes away before working it (concurrency 0);
    replica b works the queue and answers for it: summary, pages, each result once."""
    taker = RuntimeSettings(redis_url=redis_server.url, redis_concurrency=0)
    a = await aiohttp_client(create_app(taker, telemetry))
    response = await a.post("/v1/batches", json={"tasks": tasks(12), "workers": 3})
    assert response.status == 202, await response.text()
    created = await response.json()
    await a.close()  # the replica that took it is gone
    worker = RuntimeSettings(redis_url=redis_server.url, redis_concurrency=4)
    b = await aiohttp_client(create_app(worker, telemetry))
    body = await follow(b, created["url"], {"finished"})
    assert body["counts"] == {"completed": 12}
    assert (body["total"], body["done"]) == (12, 12)
    assert body["finished_at"] >= body["created_at"]
    results, pages = await all_results(b, body["results_url"], limit=5)
    assert pages == 3
    outputs = {r["id"]: r["result"]["output"] for r in results}
    assert len(results) == len(outputs) == 12
    assert outputs["t7"] == "The answer is 21."
    assert (await b.get("/v1/batches/nosuchbatch")).status == 404
    assert 0 < await ttl(redis_server, f"agentwatch:b:{created['id']}:results") <= 86_400


async def test_a_batch_cancelled_on_one_replica_is_cancelled_for_all(
    redis_server: RedisServer, aiohttp_client: Client, telemetry: Telemetry
) -> None:
    settings = RuntimeSettings(redis_url=redis_server.url, redis_concurrency=0)
    a = await aiohttp_client(create_app(settings, telemetry))
    b = await aiohttp_client(create_app(settings, telemetry))
    created = await (await a.post("/v1/batches", json={"tasks": tasks(5)})).json()
    cancelling = await b.delete(created["url"])
    assert cancelling.status == 202
    assert (await cancelling.json())["state"] == "cancelling"
    body = await (await a.get(created["url"])).json()
    assert body["state"] == "cancelled"
    assert (await b.delete(created["url"])).status == 200  # ended: its summary
    assert 0 < await ttl(redis_server, f"agentwatch:b:{created['id']}") <= 86_400


async def test_a_batch_stops_at_its_budget_counted_in_redis(
    redis_server: RedisServer, aiohttp_client: Client, telemetry: Telemetry
) -> None:
    """As the batch in one process (test_cost.py): a priced model, a budget the first
    result spends; the replica that works the queue, one task at a time, starts no
    other: each ends cancelled with the reason, the batch finishes, budget_exceeded,
    and the cost any replica reports is what the results say."""
    taker = RuntimeSettings(redis_url=redis_server.url, redis_concurrency=0, model="gpt-4o-mini")
    a = await aiohttp_client(create_app(taker, telemetry))
    started = await a.post("/v1/batches", json={"tasks": tasks(6), "budget_usd": 1e-9})
    assert started.status == 202, await started.text()
    created = await started.json()
    assert "budget_warning" not in created  # the model has a price
    worker = replace(taker, redis_concurrency=1)
    b = await aiohttp_client(create_app(worker, telemetry))
    summary = await follow(b, created["url"], {"finished"})
    assert summary["budget_exceeded"] is True
    assert summary["budget_usd"] == 1e-9
    assert summary["counts"] == {"completed": 1, "cancelled": 5}
    results, _ = await all_results(a, summary["results_url"], limit=10)
    (done,) = [r for r in results if r["status"] == "completed"]
    assert done["cost_usd"] == pytest.approx(done["result"]["usage"]["cost_usd"])
    assert summary["cost_usd"] == pytest.approx(done["cost_usd"])
    assert {r["error"] for r in results if r["status"] == "cancelled"} == {
        "not run: the batch's budget (budget_usd) was spent"
    }
    roomy = await a.post("/v1/batches", json={"tasks": tasks(3), "budget_usd": 1})
    summary = await follow(b, (await roomy.json())["url"], {"finished"})
    assert (summary["counts"], summary["budget_exceeded"]) == ({"completed": 3}, False)
    assert summary["cost_usd"] > 0


async def test_redis_down_answers_503_with_retry_after(
    redis_server: RedisServer,
    aiohttp_client: Client,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentwatch.runtime.service import redis_batches

    monkeypatch.setattr(redis_batches, "REDIS_WAIT_SECONDS", 0.5)
    settings = RuntimeSettings(redis_url=redis_server.url, redis_concurrency=0)
    client = await aiohttp_client(create_app(settings, telemetry))
    redis_server.stop()
    response = await client.get("/v1/batches/abc")
    assert response.status == 503
    assert (await response.json())["error"]["type"] == "redis_unavailable"
    assert response.headers["Retry-After"] == "5"
