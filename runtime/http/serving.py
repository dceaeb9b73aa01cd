"""How ``agentwatch serve`` puts the service on a socket: aiohttp with the connection
limits a hostile client meets before any route runs.

- A request head (request line and headers) is read within ``HEAD_TIMEOUT`` seconds of
  its first byte and is at most ``MAX_HEAD_BYTES`` in all; past either the connection
  gets a JSON 408 / 431 and is closed. aiohttp limits each line (``MAX_LINE_BYTES``) and
  the number of headers (``MAX_HEADERS``) but not their total: 400 connections that
  each sent 126 headers of 8,000 bytes and never finished held 800 MiB for 75 s.
- A connection that sends nothing is closed after ``KEEPALIVE_TIMEOUT`` seconds.
- A request body is never inflated (``handler_limits``: aiohttp's ``auto_decompress``
  off): a ``Content-Encoding`` body is refused by ``read_json`` (415) as it came. Inflated,
  a 1 MiB gzip bomb held the loop for 2.9 s before the body limit refused it, and aiohttp
  went on inflating what followed to discard it.
- A request aiohttp's parser refuses (not HTTP, a line too long, too many headers) is
  answered with a JSON error body (the service's ``{"error": {"type", "message"}}``, or
  what ``make_runner(error_body=...)`` builds), logged at debug level only (a client's
  mistake, not ours), and no response names the server's software or version.

These limits belong to the connection, not to the application: ``create_app`` alone
(served by ``web.run_app`` or a host's own ``AppRunner``) gets aiohttp's defaults. A host
that embeds the service gets them with ``make_runner(app)`` in place of
``web.AppRunner(app)`` (then ``await start_site(runner, host, port)``), or serves with
``run_service(app, host=..., port=...)``, which serves until SIGINT or SIGTERM, then lets
requests in flight finish for ``shutdown_timeout`` seconds, as ``web.run_app`` does.

A failure to listen (the address in use, not permitted, a host that does not resolve, a
port out of range) is a ``BindError``, raised by ``start_site`` only: an ``OSError`` the
application raises while it starts is never mistaken for one.

``LimitedRequestHandler`` builds on aiohttp's protocol internals (``_messages``,
``_loop``, ``_kwargs``, ``request.writer.output_size``); it is verified with the aiohttp
versions pyproject.toml allows, and ``tests/reliability/test_hostile_service.py`` fails
with the aiohttp version named if one of them goes away.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.streams import StreamReader

from agentwatch.telemetry import AgentwatchError

MAX_LINE_BYTES: Final = 8190  # request line, as aiohttp's default (and nginx's 8k buffers)
MAX_FIELD_BYTES: Final = 8190  # one header line
MAX_HEADERS: Final = 64
MAX_HEAD_BYTES: Final = 32 * 1024  # request line + all headers (nginx: 4 x 8k buffers)
HEAD_TIMEOUT: Final = 10.0  # seconds from a head's first byte to its end
KEEPALIVE_TIMEOUT: Final = 15.0  # an idle connection (none sent, or between requests)
SERVER_NAME: Final = "agentwatch"

ErrorBody = Callable[[str, str], dict[str, Any]]
"""``(kind, message) -> the JSON body`` of an error the connection answers itself."""


def service_error_body(kind: str, message: str) -> dict[str, Any]:
    """The service's error body: ``{"error": {"type": kind, "message": message}}``."""
    return {"error": {"type": kind, "message": message}}


def handler_limits() -> dict[str, Any]:
    """aiohttp's per-line and per-count limits, and request bodies never inflated
    (``web.Application(handler_args=...)``: every runner of the app gets them)."""
    return {
        "max_line_size": MAX_LINE_BYTES,
        "max_field_size": MAX_FIELD_BYTES,
        "max_headers": MAX_HEADERS,
        "auto_decompress": False,
    }


def raw_error(
    status: int, kind: str, message: str, error_body: ErrorBody = service_error_body
) -> bytes:
    """A whole HTTP/1.1 response with the JSON error body, for a connection about to close."""
    body = json.dumps(error_body(kind, message)).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: close\r\n"
        f"Server: {SERVER_NAME}\r\n\r\n"
    )
    return head.encode("ascii") + body


def _head_end(tail: bytes, data: bytes) -> int:
    """Where the head ends in ``data`` (the index after its blank line), or -1;
    ``tail`` is the end of what came before (a blank line may straddle two reads).
    Only CRLF line ends: aiohttp's parser refuses bare LF."""
    found = (tail + data).find(b"\n\r\n")
    return -1 if found < 0 else max(0, found + 3 - len(tail))


class LimitedRequestHandler(web.RequestHandler):
    """aiohttp's protocol, plus the total size and the time limit of a request head,
    and JSON bodies for the errors its parser answers."""

    __slots__ = ("_body", "_head_bytes", "_head_tail", "_head_timer", "error_body")

    def __init__(
        self, manager: web.Server, *, error_body: ErrorBody = service_error_body, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self.error_body = error_body
        self._body: StreamReader | None = None  # the last request's body, while it comes
        self._head_bytes = 0
        self._head_tail = b""
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        body = self._body
        # aiohttp feeds b"" once a body has been read: that is no new head (timing it
        # cut off every request that took longer than HEAD_TIMEOUT to answer).
        in_head = bool(data) and self.transport is not None and (body is None or body.is_eof())
        if in_head:
            end = _head_end(self._head_tail, data)
            self._head_bytes += len(data) if end < 0 else end
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(
                    431,
                    "header_too_large",
                    f"The request line and headers are larger than {MAX_HEAD_BYTES} bytes.",
                )
                return
            if self._head_timer is None:
                self._head_timer = self._loop.call_later(HEAD_TIMEOUT, self._head_too_slow)
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued:  # a head was parsed: its body (if any) follows
            self._body = self._messages[-1][1]
            self._head_done()
        elif in_head:
            self._head_tail = data[-2:]

    def _head_done(self) -> None:
        self._head_bytes = 0
        self._head_tail = b""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        self._refuse(
            408, "request_timeout", f"The request headers took longer than {HEAD_TIMEOUT:g} s."
        )

    def _refuse(self, status: int, kind: str, message: str) -> None:
        self.log_debug("refused a request head: %s", message)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(raw_error(status, kind, message, self.error_body))
        self._head_done()
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._head_done()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """What aiohttp answers itself (a request its parser refused, a handler that
        raised past every middleware): the JSON error body, never text or a banner."""
        if status >= 500:
            return self._json_error(super().handle_error(request, status, exc, message))
        self.log_debug("refused a request: %s", exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the response was sent already")
        if isinstance(exc, LineTooLong):
            kind, status = "header_too_large", 431
            text = f"A request or header line is longer than {MAX_FIELD_BYTES} bytes."
        else:
            kind = "bad_request"
            reason = (message or "bad request").split("\n", 1)[0].rstrip(": ")
            text = f"The request is not valid HTTP: {reason[:120]}."
        response = web.json_response(self.error_body(kind, text), status=status)
        return self._json_error(response)

    def _json_error(self, response: web.StreamResponse) -> web.StreamResponse:
        if not isinstance(response, web.Response) or response.content_type != "application/json":
            body = self.error_body("internal_error", "The server failed.")
            response = web.json_response(body, status=response.status)
        response.headers[hdrs.SERVER] = SERVER_NAME
        response.force_close()
        return response


class _LimitedServer(web.Server):
    def __init__(self, *args: Any, error_body: ErrorBody, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._error_body = error_body

    def __call__(self) -> web.RequestHandler:
        return LimitedRequestHandler(
            self, loop=self._loop, error_body=self._error_body, **self._kwargs
        )


class ServiceRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are ``LimitedRequestHandler`` protocols;
    ``error_body`` builds the JSON body of the errors they answer themselves."""

    def __init__(
        self, app: web.Application, *, error_body: ErrorBody = service_error_body, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._error_body = error_body

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _LimitedServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            error_body=self._error_body,
            **made._kwargs,
        )


class BindError(AgentwatchError):
    """The service cannot listen on ``host``:``port``; ``__cause__`` is the socket's error
    (``OSError`` with its errno, ``socket.gaierror`` for a host, ``OverflowError`` for a
    port out of range)."""

    def __init__(self, host: str, port: int, cause: OSError | OverflowError) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {cause}")
        self.host = host
        self.port = port
        self.__cause__ = cause


def make_runner(
    app: web.Application,
    *,
    shutdown_timeout: float = 10.0,
    error_body: ErrorBody = service_error_body,
    **kwargs: Any,
) -> web.AppRunner:
    """An ``AppRunner`` for ``app`` with this module's connection limits (the head's size
    and time, the idle timeout, JSON errors without a banner), handlers cancelled when
    their client goes away, no access log. ``error_body(kind, message)`` builds the body
    of the errors the connection answers itself (408, 431, 400 from the parser, 500);
    the service's shape by default. ``kwargs`` go to ``web.AppRunner``."""
    options: dict[str, Any] = {
        "error_body": error_body,
        "access_log": None,
        "handler_cancellation": True,
        "keepalive_timeout": KEEPALIVE_TIMEOUT,
        "shutdown_timeout": shutdown_timeout,
    }
    return ServiceRunner(app, **(options | kwargs))


async def start_site(
    runner: web.BaseRunner, host: str, port: int, *, reuse_port: bool = False
) -> web.TCPSite:
    """Listen on ``host``:``port`` with ``runner`` (set up already); ``BindError`` when the
    address cannot be used. ``reuse_port``: beside the other processes listening on it
    with ``SO_REUSEPORT`` (the kernel spreads new connections among them)."""
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    try:
        await site.start()
    except (OSError, OverflowError) as exc:  # gaierror is an OSError
        raise BindError(host, port, exc) from exc
    return site


def run_service(
    app: web.Application,
    *,
    host: str,
    port: int,
    on_listening: Callable[[int], None] | None = None,
    shutdown_timeout: float = 10.0,
    reuse_port: bool = False,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM; then requests in flight get
    ``shutdown_timeout`` seconds and are cancelled. A client that goes away cancels
    its request's handler (and so its run). ``BindError`` when it cannot listen;
    an error of the app's own start-up propagates as it is. ``on_listening(port)``
    once it listens; ``reuse_port``: one of several processes serving the port
    (``start_site``); ``loop_factory``: the event loop's (None: asyncio's)."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(app, host, port, on_listening, shutdown_timeout, reuse_port))


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    on_listening: Callable[[int], None] | None,
    shutdown_timeout: float,
    reuse_port: bool,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    runner = make_runner(app, shutdown_timeout=shutdown_timeout)
    try:
        await runner.setup()
        await start_site(runner, host, port, reuse_port=reuse_port)
        if on_listening is not None:
            on_listening(runner.addresses[0][1])  # the port bound: --port 0 chose one
        await stop.wait()
    finally:
        await runner.cleanup()
        for sig in signals:
            loop.remove_signal_handler(sig)
