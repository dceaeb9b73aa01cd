"""aiohttp glue: ``/metrics``, ``/healthz``, ``/readyz``, HTTP server metrics, and a
standalone metrics server for hosts that are not aiohttp.

``/metrics`` answers in the Prometheus text format, or OpenMetrics (with exemplars)
when the scraper's Accept header asks for it: prometheus_client's ``choose_encoder``
decides. The rendering runs in a worker thread, not on the event loop: rendering 20
families x 50 label sets took ~29 ms here, a stall every run would feel.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .core import Telemetry
from .labels import BoundedLabel
from .names import OTHER

ReadinessCheck = Callable[[], bool | Awaitable[bool]]

TELEMETRY_KEY: Final = web.AppKey("agentwatch_telemetry", Telemetry)
READINESS_KEY: Final = web.AppKey("agentwatch_readiness", list[ReadinessCheck])

_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def render_metrics(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The exposition body and its content type, in the format ``accept`` asks for."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


MetricsSource = Callable[[], Awaitable[CollectorRegistry]]
"""What a scrape renders when it is not one registry as it is (several processes'
series merged: ``agentwatch serve --workers``)."""


def metrics_handler(registry: CollectorRegistry, source: MetricsSource | None = None) -> Handler:
    async def handle_metrics(request: web.Request) -> web.Response:
        accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
        loop = asyncio.get_running_loop()
        rendered = registry if source is None else await source()
        body, content_type = await loop.run_in_executor(None, render_metrics, rendered, accept)
        response = web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
        response.enable_compression()
        return response

    return handle_metrics


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    failing = []
    for check in request.app.get(READINESS_KEY, []):
        try:
            outcome = check()
            ready = await outcome if inspect.isawaitable(outcome) else outcome
        except Exception as exc:  # a failing check means "not ready", never a 500
            ready = False
            failing.append(f"{getattr(check, '__name__', 'check')}: {type(exc).__name__}")
            continue
        if not ready:
            failing.append(getattr(check, "__name__", "check"))
    if failing:
        return web.json_response({"status": "unavailable", "failing": failing}, status=503)
    return web.json_response({"status": "ok"})


def add_telemetry_routes(
    app: web.Application,
    telemetry: Telemetry,
    *,
    readiness: list[ReadinessCheck] | None = None,
    metrics_token: str | None = None,
    metrics_source: MetricsSource | None = None,
) -> None:
    """Mount ``/metrics``, ``/healthz`` and ``/readyz`` on ``app``.

    With ``metrics_token``, ``/metrics`` needs ``Authorization: Bearer <token>``
    (Prometheus: ``authorization: {credentials: ...}``); health routes stay open.
    ``metrics_source``: what ``/metrics`` renders instead of the telemetry's registry.
    """
    app[TELEMETRY_KEY] = telemetry
    app[READINESS_KEY] = list(readiness or [])
    handler = metrics_handler(telemetry.registry, metrics_source)
    if metrics_token:
        handler = _bearer_only(handler, metrics_token)
    app.router.add_get("/metrics", handler)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)


def bearer_matches(request: web.Request, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time. A header that is
    not UTF-8 (aiohttp keeps its bytes as surrogates) is compared as the bytes it was,
    so it simply does not match: 401, never an encoding error."""
    scheme, _, provided = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    sent = provided.encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(sent, token.encode())


def _bearer_only(handler: Handler, token: str) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not bearer_matches(request, token):
            return web.json_response(
                {"error": {"type": "unauthorized", "message": "A valid bearer token is required."}},
                status=401,
                headers={hdrs.WWW_AUTHENTICATE: "Bearer"},
            )
        return await handler(request)

    return guarded


def create_metrics_app(
    telemetry: Telemetry, *, readiness: list[ReadinessCheck] | None = None
) -> web.Application:
    """An application with only the telemetry routes (mount it, or serve it alone)."""
    app = web.Application()
    add_telemetry_routes(app, telemetry, readiness=readiness)
    return app


# nginx's "client closed request": the client went away before it had the whole answer.
# Recorded instead of whatever the handler ended with; never a 5xx, never sent.
CLIENT_CLOSED_REQUEST: Final = 499


def _client_gone(request: web.Request) -> bool:
    transport = request.transport  # None once the connection is lost
    return transport is None or transport.is_closing()


def http_metrics_middleware(telemetry: Telemetry) -> Middleware:
    """Record ``http_server_request_duration_seconds`` by method, route template, status.

    A request whose client disconnected before the handler finished (the handler
    cancelled, a write failing, or an answer nobody will read) is recorded as 499.
    """
    histogram = telemetry.metrics.http_server_duration
    methods = BoundedLabel(_METHODS)
    clock = telemetry.clock

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = clock()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            if _client_gone(request):
                status = CLIENT_CLOSED_REQUEST
            info = request.match_info
            resource = info.route.resource if info.http_exception is None else None
            route = resource.canonical if resource is not None else OTHER
            histogram.labels(methods(request.method), route, str(status)).observe(clock() - start)

    return middleware


class MetricsServer:
    """The telemetry routes served from a background thread with its own event loop."""

    def __init__(self, telemetry: Telemetry, *, host: str = "127.0.0.1", port: int = 9464) -> None:
        self._telemetry = telemetry
        self._host = host
        self._requested_port = port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, name="agentwatch-metrics", daemon=True)

    def start(self, timeout: float = 10.0) -> MetricsServer:
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"metrics server did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._open())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._close())
        self._loop.close()

    async def _open(self) -> None:
        self._runner = web.AppRunner(create_metrics_app(self._telemetry), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._requested_port).start()
        self.port = self._runner.addresses[0][1]

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)


def start_metrics_server(
    telemetry: Telemetry, *, host: str = "127.0.0.1", port: int = 9464
) -> MetricsServer:
    """Serve ``/metrics``, ``/healthz``, ``/readyz`` for a host that is not aiohttp."""
    return MetricsServer(telemetry, host=host, port=port).start()
