"""The connection limits of ``agentwatch serve`` (runtime/serving.py) in-process."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from agentwatch.runtime import serving
from tests.helpers import free_port


async def test_a_request_slower_than_the_head_timeout_is_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The head timer covers a request's head only: a POST whose answer takes longer
    than HEAD_TIMEOUT (a real model's run) once got a false 408 "headers too slow"."""
    monkeypatch.setattr(serving, "HEAD_TIMEOUT", 0.2)

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(0.6)  # the upstream's latency, three head timeouts long
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/slow", slow)
    runner = serving.ServiceRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(2):  # twice on one keep-alive connection
                async with session.post(f"http://127.0.0.1:{port}/slow", json={"a": 1}) as r:
                    assert r.status == 200, await r.text()
                    assert await r.json() == {"ok": True}
    finally:
        await runner.cleanup()
