"""The connection limits of ``agentwatch serve`` (runtime/serving.py) in-process."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agentwatch.runtime.http import serving
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


async def test_make_runner_builds_error_bodies_with_the_hook_it_is_given() -> None:
    """A server with another error shape (the builtin model answers OpenAI's) gets its
    own body for the errors the connection answers itself; the service's by default."""

    def openai_shape(kind: str, message: str) -> dict[str, Any]:
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-%d: %s\r\n" % (i, b"a" * 4000) for i in range(serving.MAX_HEAD_BYTES // 4000 + 2)
    )
    bodies = []
    for hook in (openai_shape, None):
        options = {} if hook is None else {"error_body": hook}
        runner = serving.make_runner(web.Application(), **options)
        await runner.setup()
        try:
            await serving.start_site(runner, "127.0.0.1", 0)
            reader, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
            writer.write(head + b"\r\n")
            async with asyncio.timeout(10):
                answer = await reader.read(-1)
            writer.close()
        finally:
            await runner.cleanup()
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        bodies.append(json.loads(answer.partition(b"\r\n\r\n")[2]))
    assert bodies[0]["error"]["param"] is None
    assert bodies[0]["error"]["type"] == "header_too_large"
    assert bodies[1] == serving.service_error_body(
        "header_too_large", bodies[1]["error"]["message"]
    )


def test_request_bodies_are_never_inflated() -> None:
    """Every runner of an app built with ``handler_limits()`` leaves bodies as sent."""
    assert serving.handler_limits()["auto_decompress"] is False
