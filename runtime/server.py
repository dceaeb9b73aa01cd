"""The service: ``create_app(settings, telemetry) -> web.Application``.

``create_app(..., runtime=rt)`` serves ``rt``: the app starts it with the app (and stops
it on cleanup) unless it is already started, in which case its owner stops it.

Routes: ``POST /v1/runs`` (``{"input": "..."}`` → output, tool calls, usage, trace id;
with ``"stream": true`` or ``Accept: text/event-stream``, Server-Sent Events),
plus ``/metrics``, ``/healthz``, ``/readyz``. Every error is a JSON body
``{"error": {"type": ..., "message": ...}}`` with the right status, never a traceback;
no response names the server's software (``Server: agentwatch``).

Every JSON body goes through one strict parser (``parse_json``): UTF-8, an object with
only the route's fields, no duplicate keys, no NaN/Infinity, integers of at most
``MAX_INT_DIGITS`` digits, nesting at most ``MAX_JSON_DEPTH`` deep, no lone surrogate
(I-JSON, RFC 7493). A body over ``INLINE_PARSE_BYTES`` is parsed in a worker thread, one
at a time, and the checks run at C speed: no body holds the event loop. Identifiers a
client gives (``conversation_id``, task ids) are at most ``MAX_ID_CHARS`` characters:
they go on spans.
A W3C ``traceparent`` on the request makes the run part of the caller's trace. With
``AGENTWATCH_API_TOKEN`` set, every ``/v1/*`` route needs ``Authorization: Bearer
<token>`` (compared in constant time); ``/metrics`` and the health routes stay open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import openai
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import propagate
from opentelemetry.context import Context

from agentwatch.telemetry import (
    Telemetry,
    add_telemetry_routes,
    bearer_matches,
    http_metrics_middleware,
    loop_lag_ctx,
)

from .agent import Agent, AgentInputError, AgentRunError, RunTimeoutError, StepLimitError
from .batch.http import (
    BATCHES_KEY,
    BatchRecord,
    admit_batch,
    batches_ctx,
    cancel_response,
    parse_batch,
    results_response,
    start_batch,
    summary_response,
)
from .batch.task import Task
from .events import event_data
from .openapi import SPEC
from .runtime import AgentRuntime
from .serving import SERVER_NAME, handler_limits
from .settings import RuntimeSettings

_logger = logging.getLogger("agentwatch.server")

RUNTIME_KEY: Final = web.AppKey("agentwatch_runtime", AgentRuntime)
SETTINGS_KEY: Final = web.AppKey("agentwatch_settings", RuntimeSettings)
PARSING_KEY: Final = web.AppKey("agentwatch_parsing", asyncio.Semaphore)  # parse_json_async

MAX_JSON_DEPTH: Final = 32  # objects and arrays inside one another
MAX_INT_DIGITS: Final = 19  # an integer literal (int64 has 19 digits)
MAX_ID_CHARS: Final = 256  # conversation_id, a task's id
BODY_TIMEOUT: Final = 30.0  # seconds to receive a request body
SSE_KEEPALIVE: Final = 10.0  # seconds between ": waiting for a run slot" comments
RUN_FIELDS: Final = frozenset({"input", "stream", "conversation_id"})
BATCH_FIELDS: Final = frozenset({"tasks", "workers", "timeout"})


class ApiError(Exception):
    """An error answered as JSON with ``status``."""

    def __init__(
        self, status: int, kind: str, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = dict(headers or {})  # e.g. Retry-After with a 429


def error_response(status: int, kind: str, message: str) -> web.Response:
    response = web.json_response({"error": {"type": kind, "message": message}}, status=status)
    if status == 401:
        response.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
    return response


_HTTP_KINDS: Final = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    400: "bad_request",
    408: "request_timeout",
    431: "header_too_large",
}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.kind, exc.message)
        response.headers.update(exc.headers)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, _HTTP_KINDS.get(exc.status, "http_error"), exc.reason)
    except Exception:
        _logger.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "The server failed on this request.")


def bearer_auth(token: str | None) -> Middleware | None:
    if not token:
        return None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v1/") and not bearer_matches(request, token):
            raise ApiError(401, "unauthorized", "A valid bearer token is required.")
        return await handler(request)

    return auth


async def read_json(
    request: web.Request, max_bytes: int, fields: Collection[str]
) -> dict[str, Any]:
    """The request's JSON object (``parse_json``), or an ApiError: 413 before reading a
    body too large, 408 when it does not arrive within ``BODY_TIMEOUT``."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, "payload_too_large", f"The body is larger than {max_bytes} bytes.")
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            raw = await request.read()  # aiohttp stops at client_max_size with 413
    except TimeoutError:
        raise ApiError(
            408, "request_timeout", f"The body did not arrive within {BODY_TIMEOUT:g} s."
        ) from None
    return await parse_json_async(raw, fields, request.app[PARSING_KEY])


class _JsonPolicyError(ValueError):
    """The body is JSON that the API does not accept (its message says why)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _JsonPolicyError(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return obj


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _JsonPolicyError(f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _JsonPolicyError(f"a number is out of range ({text[:20]})")
    return value


def _no_constant(name: str) -> Any:
    raise _JsonPolicyError(f"{name} is not a JSON number")


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_no_duplicates,
    parse_int=_bounded_int,
    parse_float=_finite_float,
    parse_constant=_no_constant,
)


_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_TO_SQUARE: Final = bytes.maketrans(b"{}", b"[]")
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
INLINE_PARSE_BYTES: Final = 64 * 1024  # larger bodies are parsed in a worker thread


def _check_depth(raw: bytes) -> None:
    """Nesting within MAX_JSON_DEPTH, at C speed, of well-formed JSON: the brackets
    outside strings, then one level of innermost pairs removed per pass (one
    ``bytes.replace``); whatever is left after MAX_JSON_DEPTH passes is deeper."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return
    brackets = _STRING.sub(b"", raw).translate(_TO_SQUARE, _NOT_BRACKETS)
    for _ in range(MAX_JSON_DEPTH):
        brackets = brackets.replace(b"[]", b"")
        if not brackets:
            return
    raise _JsonPolicyError(f"nested deeper than {MAX_JSON_DEPTH} levels")


def _check_surrogates(raw: bytes, body: Any) -> None:
    """No lone surrogate in any string. UTF-8 text cannot hold one: only a ``\\uD8xx``
    style escape can, so the tree is checked (by the C encoder) only when the raw
    text has such an escape."""
    if _SURROGATE_ESCAPE.search(raw) is None:
        return
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _JsonPolicyError("a string holds a lone surrogate") from None


def _decode(raw: bytes) -> Any:
    # Decoded first: the checks below read well-formed JSON only (the decoder's own
    # recursion limit stops a body thousands deep: RecursionError).
    body = _DECODER.decode(raw.decode("utf-8"))
    _check_depth(raw)
    _check_surrogates(raw, body)
    return body


async def parse_json_async(
    raw: bytes, fields: Collection[str], one_at_a_time: asyncio.Semaphore
) -> dict[str, Any]:
    """``parse_json``, in a worker thread for a body over INLINE_PARSE_BYTES: a 1 MiB
    body of 349,000 empty objects takes ~0.1 s to decode, which the event loop (every
    other request, /healthz included) must not wait for. One such parse at a time: the
    decoder holds the GIL between its callbacks, and each more thread wanting it makes
    the loop wait longer for its turn (5 ms, the switch interval, per thread)."""
    if len(raw) <= INLINE_PARSE_BYTES:
        return parse_json(raw, fields)
    async with one_at_a_time:
        return await asyncio.to_thread(parse_json, raw, fields)


def parse_json(raw: bytes, fields: Collection[str]) -> dict[str, Any]:
    """The API's one JSON policy: a UTF-8 object with only ``fields`` at its top, no
    duplicate key, no NaN or Infinity, integers of at most MAX_INT_DIGITS digits,
    at most MAX_JSON_DEPTH deep, no lone surrogate. 400 (or 422 for the shape)."""
    try:
        body = _decode(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "The body is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"The body is not valid JSON: {exc}") from None
    except RecursionError:
        message = f"The body is not accepted: nested deeper than {MAX_JSON_DEPTH} levels."
        raise ApiError(400, "invalid_json", message) from None
    except _JsonPolicyError as exc:
        raise ApiError(400, "invalid_json", f"The body is not accepted: {exc}.") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "The body must be a JSON object.")
    unknown = set(body) - set(fields)
    if unknown:
        names = ", ".join(sorted(name[:40] for name in unknown)[:10])
        raise ApiError(422, "invalid_request", f"Unknown fields: {names}.")
    return body


@dataclass(frozen=True, slots=True)
class RunRequest:
    input: str
    stream: bool
    conversation_id: str | None


def _run_request(body: dict[str, Any], accept: str) -> RunRequest:
    query = body.get("input")
    if not isinstance(query, str):
        raise ApiError(422, "invalid_request", "'input' must be a string.")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(422, "invalid_request", "'stream' must be a boolean.")
    conversation = body.get("conversation_id")
    if conversation is not None and not isinstance(conversation, str):
        raise ApiError(422, "invalid_request", "'conversation_id' must be a string.")
    if conversation is not None and len(conversation) > MAX_ID_CHARS:
        message = f"'conversation_id' is longer than {MAX_ID_CHARS} characters."
        raise ApiError(422, "invalid_request", message)
    return RunRequest(query, stream or "text/event-stream" in accept, conversation)


def _as_api_error(exc: Exception) -> ApiError | None:
    """The HTTP meaning of an error a run can end with (None: a bug, answered as 500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, AgentInputError):
        return ApiError(422, "invalid_input", str(exc))
    if isinstance(exc, RunTimeoutError):
        return ApiError(504, "run_timeout", str(exc))
    if isinstance(exc, StepLimitError):
        # 508 Loop Detected (RFC 5842): the agent went round (model, tools, model, ...)
        # without a final answer and the server stopped it; a server-side failure.
        return ApiError(508, "step_limit_exceeded", str(exc))
    if isinstance(exc, AgentRunError):
        return ApiError(500, "run_failed", str(exc))
    if isinstance(exc, openai.APIError):
        notes = "".join(f" {note}." for note in getattr(exc, "__notes__", ()))
        return ApiError(502, "model_error", f"The model failed: {type(exc).__name__}.{notes}")
    if isinstance(exc, TimeoutError):  # a model client's or a tool's own deadline
        return ApiError(
            504, "upstream_timeout", "A call the run made timed out (not the run's own limit)."
        )
    return None


async def post_run(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS_KEY]
    agent = request.app[RUNTIME_KEY].agent
    body = await read_json(request, settings.max_body_bytes, RUN_FIELDS)
    run = _run_request(body, request.headers.get(hdrs.ACCEPT, ""))
    parent = propagate.extract(request.headers)
    try:
        agent.check_input(run.input)
        if run.stream:
            return await _stream_run(request, agent, run, parent)
        result = await agent.arun(run.input, parent=parent, conversation_id=run.conversation_id)
    except Exception as exc:
        mapped = _as_api_error(exc)
        if mapped is None:
            raise
        raise mapped from None
    return web.json_response(result.to_dict())


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def _stream_run(
    request: web.Request, agent: Agent, run: RunRequest, parent: Context
) -> web.StreamResponse:
    """Server-Sent Events: one event per run event, ending with ``result`` (or ``error``).

    A client that disconnects cancels the run: aiohttp cancels this handler
    (``handler_cancellation``), or the next write fails and closes the stream.
    """
    response = web.StreamResponse(
        headers={
            hdrs.CONTENT_TYPE: "text/event-stream",
            hdrs.CACHE_CONTROL: "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)

    async def waiting() -> None:  # the run waits for a slot: say so, keep proxies patient
        await response.write(b": waiting for a run slot\n\n")

    events = agent.astream(
        run.input,
        parent=parent,
        conversation_id=run.conversation_id,
        on_wait=waiting,
        wait_interval=SSE_KEEPALIVE,
    )
    try:
        async with aclosing(events):
            async for event in events:
                await response.write(sse(event.type, event_data(event)))
    except ConnectionResetError:
        return response  # the client went away; the stream was closed, the run cancelled
    except Exception as exc:
        mapped = _as_api_error(exc)
        if mapped is None:
            _logger.exception("streamed run failed")
            mapped = ApiError(500, "internal_error", "The run failed.")
        await response.write(sse("error", {"type": mapped.kind, "message": mapped.message}))
    await response.write_eof()
    return response


async def post_batch(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    agent = request.app[RUNTIME_KEY].agent
    admit_batch(request.app, settings, ApiError)  # 429 before reading the body when full
    body = await read_json(request, settings.max_body_bytes, BATCH_FIELDS)
    room = partial(admit_batch, request.app, settings, ApiError)  # 429 before parsing tasks
    tasks, options = parse_batch(body, ApiError, room)
    long_ids = [task.id for task in tasks if len(task.id) > MAX_ID_CHARS]
    if long_ids:
        message = f"{len(long_ids)} task ids are longer than {MAX_ID_CHARS} characters."
        raise ApiError(422, "invalid_tasks", message)

    async def work(task: Task) -> dict[str, Any]:
        # A run of a batch: it may take only part of the run slots (runtime/admission.py).
        return (await agent.arun(task.query, batch=True)).to_dict()

    record = start_batch(request.app, agent.telemetry, work, tasks, options, settings, ApiError)
    batch_id = record.processor.batch_id
    return web.json_response(
        {"id": batch_id, "state": record.state, "url": f"/v1/batches/{batch_id}"}, status=202
    )


def _batch(request: web.Request) -> BatchRecord:
    record = request.app[BATCHES_KEY].get(request.match_info["batch_id"])
    if record is None:
        raise ApiError(404, "not_found", "No such batch.")
    return record


async def get_batch(request: web.Request) -> web.Response:
    return summary_response(request, _batch(request), ApiError)


async def get_batch_results(request: web.Request) -> web.Response:
    return await results_response(request, _batch(request), ApiError)


async def delete_batch(request: web.Request) -> web.Response:
    return cancel_response(request, _batch(request), ApiError)


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(SPEC)


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[hdrs.SERVER] = SERVER_NAME  # not aiohttp's name and version


def create_app(
    settings: RuntimeSettings, telemetry: Telemetry, *, runtime: AgentRuntime | None = None
) -> web.Application:
    middlewares = [http_metrics_middleware(telemetry), json_errors]
    auth = bearer_auth(settings.api_token)
    if auth is not None:
        middlewares.append(auth)
    app = web.Application(
        middlewares=middlewares,
        client_max_size=settings.max_body_bytes,
        handler_args=handler_limits(),  # per line and count; serving.py adds the total
    )
    app.on_response_prepare.append(_server_header)
    app[SETTINGS_KEY] = settings
    app[PARSING_KEY] = asyncio.Semaphore(1)
    app[RUNTIME_KEY] = runtime if runtime is not None else AgentRuntime(settings, telemetry)

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        # The app starts the runtime unless it was given one already started, and
        # stops only what it started: a started runtime stays its owner's to stop.
        rt = app[RUNTIME_KEY]
        owned = not rt.started
        if owned:
            await rt.start()
        yield
        if owned:
            await rt.stop()

    def runtime_started() -> bool:
        return app[RUNTIME_KEY].started

    app.cleanup_ctx.append(runtime_ctx)
    app.cleanup_ctx.append(batches_ctx)  # after the runtime: torn down before it
    add_telemetry_routes(
        app, telemetry, readiness=[runtime_started], metrics_token=settings.metrics_token
    )
    app.cleanup_ctx.append(lambda _: loop_lag_ctx(telemetry))
    app.router.add_get("/openapi.json", get_openapi)
    app.router.add_post("/v1/runs", post_run)
    app.router.add_post("/v1/batches", post_batch)
    app.router.add_get("/v1/batches/{batch_id}", get_batch)
    app.router.add_get("/v1/batches/{batch_id}/results", get_batch_results)
    app.router.add_delete("/v1/batches/{batch_id}", delete_batch)
    return app
