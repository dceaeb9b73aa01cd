"""The telemetry routes over real HTTP (aiohttp test client on loopback)."""

from __future__ import annotations

import asyncio
from asyncio.subprocess import PIPE, STDOUT

from aiohttp import web
from aiohttp.test_utils import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.telemetry import (
    Telemetry,
    add_telemetry_routes,
    create_metrics_app,
    http_metrics_middleware,
    start_metrics_server,
)

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
ClientFactory = object


async def _observe_some(telemetry: Telemetry) -> None:
    async with telemetry.observe("warmup"):
        pass


async def test_metrics_text_passes_promtool(
    aiohttp_client: ClientFactory, telemetry: Telemetry, promtool: str
) -> None:
    await _observe_some(telemetry)
    client: TestClient = await aiohttp_client(create_metrics_app(telemetry))  # type: ignore[operator]
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    body = await response.text()
    assert (
        'agentwatch_operation_duration_seconds_count{error_type="",operation="warmup"} 1.0' in body
    )
    assert "# {" not in body  # no exemplars in the plain text format
    lint = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
    )
    output, _ = await asyncio.wait_for(lint.communicate(body.encode()), timeout=30)
    assert lint.returncode == 0, output.decode()


async def test_openmetrics_scrape_carries_the_trace_id_exemplar(
    aiohttp_client: ClientFactory, telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    await _observe_some(telemetry)
    (span,) = exporter.get_finished_spans()
    client: TestClient = await aiohttp_client(create_metrics_app(telemetry))  # type: ignore[operator]
    response = await client.get("/metrics", headers={"Accept": OPENMETRICS})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    body = await response.text()
    assert body.rstrip().endswith("# EOF")
    assert f'# {{trace_id="{format(span.context.trace_id, "032x")}"}}' in body


async def test_health_and_readiness(aiohttp_client: ClientFactory, telemetry: Telemetry) -> None:
    ready = {"db": False}

    def database() -> bool:
        return ready["db"]

    async def broken() -> bool:
        raise RuntimeError("down")

    app = web.Application()
    add_telemetry_routes(app, telemetry, readiness=[database])
    client: TestClient = await aiohttp_client(app)  # type: ignore[operator]
    assert (await client.get("/healthz")).status == 200
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["failing"] == ["database"]
    ready["db"] = True
    assert (await client.get("/readyz")).status == 200

    app2 = create_metrics_app(telemetry, readiness=[broken])
    client2: TestClient = await aiohttp_client(app2)  # type: ignore[operator]
    response = await client2.get("/readyz")
    assert response.status == 503
    assert (await response.json())["failing"] == ["broken: RuntimeError"]


async def test_http_middleware_labels_by_route_template(
    aiohttp_client: ClientFactory, telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    async def item(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["item_id"]})

    app = web.Application(middlewares=[http_metrics_middleware(telemetry)])
    app.router.add_get("/items/{item_id}", item)
    client: TestClient = await aiohttp_client(app)  # type: ignore[operator]
    for i in range(5):
        assert (await client.get(f"/items/{i}")).status == 200
    assert (await client.get("/no/such/route/12345")).status == 404
    assert (await client.request("TRACE", "/items/1")).status == 405

    def n(method: str, route: str, status: str) -> float | None:
        return registry.get_sample_value(
            "http_server_request_duration_seconds_count",
            {
                "http_request_method": method,
                "http_route": route,
                "http_response_status_code": status,
            },
        )

    assert n("GET", "/items/{item_id}", "200") == 5
    assert n("GET", "_OTHER", "404") == 1  # no raw path ever becomes a label
    assert n("_OTHER", "_OTHER", "405") == 1


def test_standalone_metrics_server_serves_real_http(telemetry: Telemetry) -> None:
    import urllib.request

    server = start_metrics_server(telemetry, port=0)
    try:
        assert server.port > 0
        url = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert "# HELP agentwatch_operation_duration_seconds" in body
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            assert response.status == 200
    finally:
        server.stop()


async def test_client_disconnects_are_recorded_as_499_never_500(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    """A client that goes away before its answer: the handler cancelled (aiohttp's
    handler_cancellation), a write that fails, or an answer returned to nobody."""
    started = asyncio.Event()
    release = asyncio.Event()

    seen: list[web.Request] = []

    async def waits(request: web.Request) -> web.Response:
        seen.append(request)
        started.set()
        await release.wait()  # cancelled, or released once the client is gone
        return web.json_response({"ok": True})

    async def streams(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        started.set()
        try:
            for _ in range(3000):  # bounded: ~30 s at most
                await response.write(b"data: tick\n\n")
                await asyncio.sleep(0.01)
        except ConnectionResetError:
            return response  # the client went away
        await response.write_eof()
        return response

    def n(route: str, status: str) -> float:
        value = registry.get_sample_value(
            "http_server_request_duration_seconds_count",
            {
                "http_request_method": "GET",
                "http_route": route,
                "http_response_status_code": status,
            },
        )
        return value or 0.0

    for cancellation in (True, False):
        app = web.Application(middlewares=[http_metrics_middleware(telemetry)])
        app.router.add_get("/wait", waits)
        app.router.add_get("/stream", streams)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=cancellation)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        try:
            for path in ("/wait", "/stream"):
                started.clear()
                release.clear()
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                await asyncio.wait_for(started.wait(), timeout=30)
                writer.close()  # the client goes away
                await writer.wait_closed()
                for _ in range(1000):  # bounded: until the server has seen it
                    if n(path, "499") == (1 if cancellation else 2):
                        break
                    if path == "/wait" and seen[-1].transport is None:
                        release.set()  # the connection is lost: the handler answers nobody
                    await asyncio.sleep(0.01)
        finally:
            await runner.cleanup()
    for path in ("/wait", "/stream"):
        assert n(path, "499") == 2, path
        assert n(path, "500") == 0, path
        assert n(path, "200") == 0, path
