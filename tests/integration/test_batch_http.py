"""``/v1/batches`` over real HTTP: submit, follow the summary, page through the results,
cancel; the per-process limits (429 with Retry-After) and what is kept once finished."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from agentwatch.runtime.batch import MemoryResultSink
from agentwatch.runtime.service.app import create_app
from agentwatch.runtime.service.batches import BATCHES_KEY
from agentwatch.runtime.settings import RuntimeSettings, SettingError
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


async def all_results(client: TestClient, url: str, limit: int) -> tuple[list[Any], int]:
    """Every result, following next_cursor; and how many pages it took."""
    results: list[Any] = []
    query: dict[str, Any] = {"limit": limit}
    for pages in range(1, 1000):  # bounded
        response = await client.get(url, params=query)
        assert response.status == 200, await response.text()
        page = await response.json()
        assert len(page["results"]) <= limit
        results.extend(page["results"])
        if page["next_cursor"] is None:
            return results, pages
        query = {"limit": limit, "cursor": page["next_cursor"]}
        if not page["results"]:
            await asyncio.sleep(0.02)  # none yet: the batch runs on
    raise AssertionError("next_cursor never ended")


async def test_submit_follow_and_read_results(aiohttp_client: Client, telemetry: Telemetry) -> None:
    client = await aiohttp_client(create_app(RuntimeSettings(), telemetry))
    tasks = [{"id": f"t{i}", "query": f"what is {i} * 3", "priority": i % 2} for i in range(12)]
    response = await client.post("/v1/batches", json={"tasks": tasks, "workers": 3})
    assert response.status == 202
    created = await response.json()
    body = await follow(client, created["url"], {"finished"})
    assert body["counts"] == {"completed": 12}
    assert (body["total"], body["done"]) == (12, 12)
    assert body["created_at"].endswith("Z")
    assert body["finished_at"] >= body["created_at"]
    assert "results" not in body  # the summary never lists the tasks
    results, pages = await all_results(client, body["results_url"], limit=5)
    assert pages == 3
    outputs = {r["id"]: r["result"]["output"] for r in results}
    assert len(results) == len(outputs) == 12
    assert outputs["t7"] == "The answer is 21."


async def test_results_are_read_through_the_batch_memory_sink(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    app = create_app(RuntimeSettings(), telemetry)
    client = await aiohttp_client(app)
    tasks = [{"id": i, "query": f"what is {i} + 2"} for i in range(7)]
    created = await (await client.post("/v1/batches", json={"tasks": tasks, "workers": 2})).json()
    await follow(client, created["url"], {"finished"})
    record = app[BATCHES_KEY][created["id"]]
    assert isinstance(record.sink, MemoryResultSink)
    assert record.processor.sink is record.sink  # the processor adds to it, the pages read it
    results, _ = await all_results(client, f"{created['url']}/results", limit=3)
    assert results == list(record.sink.records)
    assert len(results) == 7


async def test_following_the_cursor_while_it_runs_gives_each_result_once(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    settings = replace(RuntimeSettings(), builtin_latency=0.01)
    client = await aiohttp_client(create_app(settings, telemetry))
    tasks = [{"id": i, "query": "hello"} for i in range(40)]
    created = await (await client.post("/v1/batches", json={"tasks": tasks, "workers": 4})).json()
    results, _ = await all_results(client, f"{created['url']}/results", limit=3)
    assert sorted(int(r["id"]) for r in results) == list(range(40))
    assert {r["status"] for r in results} == {"completed"}
    # read again from the start: every result, nothing more to come
    again = await (await client.get(f"{created['url']}/results")).json()
    assert len(again["results"]) == 40
    assert again["next_cursor"] is None


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
    results, _ = await all_results(client, body["results_url"], limit=1000)
    assert len(results) == len({r["id"] for r in results}) == 50


@pytest.mark.parametrize(
    ("payload", "status", "kind"),
    [
        ({"tasks": []}, 422, "invalid_request"),
        ({"tasks": [{"id": "a"}]}, 422, "invalid_tasks"),
        ({"tasks": [{"id": "a", "input": "x", "zzz": 1}]}, 422, "invalid_tasks"),
        ({"tasks": [{"id": "a", "query": "x", "input": "y"}]}, 422, "invalid_tasks"),
        ({"tasks": [{"id": "a", "query": "x"}, {"id": "a", "query": "y"}]}, 422, "invalid_tasks"),
        ({"tasks": [{"id": "a", "query": "x"}], "workers": 0}, 422, "invalid_request"),
        ({"tasks": [{"id": "a", "query": "x"}], "timeout": -1}, 422, "invalid_request"),
        ({"tasks": [{"id": i, "query": "x"} for i in range(10_001)]}, 413, "too_many_tasks"),
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
    assert (await client.get("/v1/batches/nope/results")).status == 404


async def test_bad_pages_are_refused(aiohttp_client: Client, telemetry: Telemetry) -> None:
    client = await aiohttp_client(create_app(RuntimeSettings(), telemetry))
    tasks = [{"id": i, "query": "hello"} for i in range(3)]
    one = await (await client.post("/v1/batches", json={"tasks": tasks})).json()
    other = await (await client.post("/v1/batches", json={"tasks": tasks})).json()
    await follow(client, one["url"], {"finished"})
    foreign = (await (await client.get(f"{other['url']}/results?limit=1")).json())["next_cursor"]
    assert foreign is not None
    for query, kind in [
        ("limit=0", "invalid_request"),
        ("limit=1001", "invalid_request"),
        ("limit=ten", "invalid_request"),
        ("limit=%EF%BC%91", "invalid_request"),  # a full-width digit
        ("limit=99999999999999999999", "invalid_request"),
        ("page=2", "invalid_request"),
        ("cursor=", "invalid_cursor"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("cursor=%F0%9F%92%A5", "invalid_cursor"),
        (f"cursor={foreign}", "invalid_cursor"),  # another batch's
        ("cursor=" + "9" * 5000, "invalid_cursor"),
    ]:
        response = await client.get(f"{one['url']}/results?{query}")
        assert response.status == 422, query
        assert (await response.json())["error"]["type"] == kind, query


async def test_batches_past_the_limits_get_429_with_retry_after(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    settings = replace(
        RuntimeSettings(), builtin_latency=1.0, max_running_batches=2, max_batch_queued_tasks=10
    )
    client = await aiohttp_client(create_app(settings, telemetry))

    def batch(n: int) -> dict[str, Any]:
        return {"tasks": [{"id": i, "query": "hello"} for i in range(n)], "workers": 1}

    first = await client.post("/v1/batches", json=batch(6))
    assert first.status == 202
    too_many_tasks = await client.post("/v1/batches", json=batch(5))  # 6 + 5 > 10
    assert too_many_tasks.status == 429
    assert int(too_many_tasks.headers["Retry-After"]) > 0
    assert (await too_many_tasks.json())["error"]["type"] == "too_many_queued_tasks"
    never = await client.post("/v1/batches", json=batch(11))  # can never fit: not a retry
    assert never.status == 413
    assert "Retry-After" not in never.headers
    assert (await client.post("/v1/batches", json=batch(2))).status == 202
    too_many_batches = await client.post("/v1/batches", json=batch(1))
    assert too_many_batches.status == 429
    assert int(too_many_batches.headers["Retry-After"]) > 0
    assert (await too_many_batches.json())["error"]["type"] == "too_many_batches"
    # once the first ends (cancelled here, not to wait), there is room again
    url = (await first.json())["url"]
    assert (await client.delete(url)).status == 202
    await follow(client, url, {"finished"})
    assert (await client.post("/v1/batches", json=batch(1))).status == 202


async def test_finished_batches_are_dropped_oldest_first_past_the_kept_tasks(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    settings = replace(RuntimeSettings(), max_batch_kept_tasks=10)
    app = create_app(settings, telemetry)
    client = await aiohttp_client(app)
    urls = []
    for _ in range(4):  # 4 x 4 tasks, one after the other
        tasks = [{"id": i, "query": "hello"} for i in range(4)]
        created = await (await client.post("/v1/batches", json={"tasks": tasks})).json()
        await follow(client, created["url"], {"finished"})
        urls.append(created["url"])
    kept = [(await client.get(url)).status for url in urls]
    assert kept == [404, 404, 200, 200]  # 8 tasks kept of 16: a third batch would pass 10
    assert len(app[BATCHES_KEY]) == 2


def test_the_batch_limits_come_from_the_environment() -> None:
    settings = RuntimeSettings.from_env(
        {
            "AGENTWATCH_MAX_RUNNING_BATCHES": "3",
            "AGENTWATCH_MAX_BATCH_QUEUED_TASKS": "500",
            "AGENTWATCH_MAX_BATCH_KEPT_TASKS": "700",
        }
    )
    assert (settings.max_running_batches, settings.max_batch_queued_tasks) == (3, 500)
    assert settings.max_batch_kept_tasks == 700
    defaults = RuntimeSettings.from_env({})
    assert (defaults.max_running_batches, defaults.max_batch_queued_tasks) == (8, 20_000)
    with pytest.raises(SettingError, match="AGENTWATCH_MAX_RUNNING_BATCHES must be at least 1"):
        RuntimeSettings.from_env({"AGENTWATCH_MAX_RUNNING_BATCHES": "0"})


async def test_delete_of_an_ended_batch_answers_its_real_state(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    client = await aiohttp_client(create_app(RuntimeSettings(), telemetry))
    tasks = [{"id": i, "query": "hello"} for i in range(3)]
    created = await (await client.post("/v1/batches", json={"tasks": tasks})).json()
    await follow(client, created["url"], {"finished"})
    response = await client.delete(created["url"])
    assert response.status == 200  # the old code: 202 "cancelling", for nothing to cancel
    body = await response.json()
    assert body["state"] == "finished"
    assert body["counts"] == {"completed": 3}
    again = await (await client.get(created["url"])).json()
    assert again["counts"] == {"completed": 3}


async def test_one_query_policy_for_the_batch_routes(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    client = await aiohttp_client(create_app(RuntimeSettings(), telemetry))
    tasks = [{"id": i, "query": "hello"} for i in range(3)]
    url = (await (await client.post("/v1/batches", json={"tasks": tasks})).json())["url"]
    await follow(client, url, {"finished"})
    for method, target, message in [
        ("GET", f"{url}?zzz=1", "Unknown parameters: zzz."),
        ("GET", f"{url}?limit=5", "Unknown parameters: limit."),
        ("GET", f"{url}/results?page=2", "Unknown parameters: page."),
        ("GET", f"{url}/results?limit=5&limit=6", "more than once: limit."),
        ("GET", f"{url}/results?cursor=a&cursor=b", "more than once: cursor."),
        ("DELETE", f"{url}?force=1", "Unknown parameters: force."),
    ]:
        response = await client.request(method, target)
        assert response.status == 422, target
        error = (await response.json())["error"]
        assert error["type"] == "invalid_request", target
        assert message in error["message"], target
    page = await (await client.get(f"{url}/results?limit=2")).json()
    assert len(page["results"]) == 2
    assert (await client.get(url)).status == 200


async def test_a_big_page_is_the_same_json_however_it_is_encoded(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    client = await aiohttp_client(create_app(RuntimeSettings(), telemetry))
    tasks = [{"id": i, "query": f"what is {i} + 1"} for i in range(60)]
    url = (await (await client.post("/v1/batches", json={"tasks": tasks})).json())["url"]
    await follow(client, url, {"finished"})
    big = await client.get(f"{url}/results?limit=1000")  # over INLINE_PAGE_RESULTS
    assert big.status == 200
    assert big.content_type == "application/json"
    page = await big.json()
    small, _ = await all_results(client, f"{url}/results", limit=7)
    assert page["results"] == small
    assert page["next_cursor"] is None
    assert len(page["results"]) == 60
