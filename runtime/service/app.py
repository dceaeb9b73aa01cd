"""The service: ``create_app(settings, telemetry) -> web.Application``.

``create_app(..., runtime=rt)`` serves ``rt``: the app starts it with the app (and stops
it on cleanup) unless it is already started, in which case its owner stops it.

Routes: ``POST /v1/runs`` (here: ``{"input": "..."}`` → output, tool calls, usage, trace
id; with ``"stream": true`` or ``Accept: text/event-stream``, Server-Sent Events),
``/v1/batches`` (batches.py), ``/openapi.json`` (openapi.py), plus ``/metrics``,
``/healthz``, ``/readyz`` (agentwatch.telemetry). Every error is a JSON body
``{"error": {"type": ..., "message": ...}}`` with the right status, never a traceback
(a route raises ``ApiError``; the ``json_errors`` middleware answers it); no response
names the server's software (``Server: agentwatch``).

Every JSON body is read by ``read_json`` (runtime/http/jsonpolicy.py, re-exported here): one
strict parser (``parse_json``: UTF-8, an object with only the route's fields, no
duplicate keys, no NaN/Infinity, integers of at most ``MAX_INT_DIGITS`` digits, nesting at
most ``MAX_JSON_DEPTH`` deep, no lone surrogate), large bodies parsed in a worker thread;
a compressed body is refused (415) and never inflated; the bodies being received at once
are bounded (``MAX_BODY_BYTES_IN_FLIGHT``, then 503 with Retry-After). Identifiers a
client gives (``conversation_id``, task ids) are at most ``MAX_ID_CHARS`` characters:
they go on spans.
A W3C ``traceparent`` on the request makes the run part of the caller's trace (with the
configured propagators; a ``baggage`` header is not read: nothing here uses it). With
``AGENTWATCH_API_TOKEN`` set, every ``/v1/*`` route needs ``Authorization: Bearer
<token>`` (compared in constant time); ``/metrics`` and the health routes stay open.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

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
from agentwatch.telemetry.web import MetricsSource

from ..agents.admission import AdmissionRefused
from ..agents.agent import Agent, AgentInputError, AgentRunError, RunTimeoutError, StepLimitError
from ..agents.agent_runtime import AgentRuntime
from ..budget import BUDGET_EXCEEDED, BudgetExceededError, budget_from, run_budget
from ..events import event_data
from ..http.jsonpolicy import BODY_BUDGET_KEY as BODY_BUDGET_KEY
from ..http.jsonpolicy import BODY_TIMEOUT as BODY_TIMEOUT
from ..http.jsonpolicy import INLINE_PARSE_BYTES as INLINE_PARSE_BYTES
from ..http.jsonpolicy import MAX_BODY_BYTES_IN_FLIGHT as MAX_BODY_BYTES_IN_FLIGHT
from ..http.jsonpolicy import MAX_INT_DIGITS as MAX_INT_DIGITS
from ..http.jsonpolicy import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from ..http.jsonpolicy import PARSING_KEY as PARSING_KEY
from ..http.jsonpolicy import ApiError as ApiError
from ..http.jsonpolicy import BodyBudget as BodyBudget
from ..http.jsonpolicy import JsonPolicyError as JsonPolicyError
from ..http.jsonpolicy import decode_json as decode_json
from ..http.jsonpolicy import parse_json as parse_json
from ..http.jsonpolicy import parse_json_async as parse_json_async
from ..http.jsonpolicy import read_json as read_json
from ..http.serving import SERVER_NAME, handler_limits, service_error_body
from ..provider_errors import PYTHON, FailureKind, classify
from ..settings import RuntimeSettings
from .batches import add_batch_routes
from .openapi import add_openapi_route
from .state import MAX_ID_CHARS as MAX_ID_CHARS
from .state import RUNTIME_KEY as RUNTIME_KEY
from .state import SETTINGS_KEY as SETTINGS_KEY

if TYPE_CHECKING:
    from multidict import CIMultiDict, CIMultiDictProxy  # aiohttp's headers

_logger = logging.getLogger("agentwatch.server")

SSE_KEEPALIVE: Final = 10.0  # seconds between ": waiting for a run slot" comments
RUN_FIELDS: Final = frozenset({"input", "stream", "conversation_id", "budget_usd"})


def error_response(
    status: int, kind: str, message: str, fields: Mapping[str, Any] | None = None
) -> web.Response:
    body = service_error_body(kind, message)
    body["error"].update(fields or {})
    response = web.json_response(body, status=status)
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
        response = error_response(exc.status, exc.kind, exc.message, exc.fields)
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


@dataclass(frozen=True, slots=True)
class RunRequest:
    input: str
    stream: bool
    conversation_id: str | None
    budget_usd: float | None = None  # at most AGENTWATCH_RUN_BUDGET_USD (the agent's)


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
    try:
        budget = budget_from(body.get("budget_usd"))
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    return RunRequest(query, stream or "text/event-stream" in accept, conversation, budget)


# The HTTP answer to a run a provider's failure ended, by the failure's kind: a timeout
# of a model client (any provider's, or a TimeoutError of its own deadline) is 504
# upstream_timeout, not the run's own limit; every other failure is 502 model_error.
_PROVIDER_FAILURES: Final[Mapping[FailureKind, tuple[int, str, str]]] = {
    kind: (502, "model_error", "The model failed: {error}.") for kind in FailureKind
} | {
    FailureKind.TIMEOUT: (
        504,
        "upstream_timeout",
        "A call the run made timed out (not the run's own limit).",
    ),
}


def _as_api_error(exc: Exception) -> ApiError | None:
    """The HTTP meaning of an error a run can end with (None: a bug, answered as 500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, AgentInputError):
        return ApiError(422, "invalid_input", str(exc))
    if isinstance(exc, RunTimeoutError):
        return ApiError(504, "run_timeout", str(exc))
    if isinstance(exc, AdmissionRefused):  # load shed: too many runs wait, or too long
        retry = {str(hdrs.RETRY_AFTER): str(exc.retry_after)}
        return ApiError(503, "overloaded", f"The service is overloaded: {exc}.", headers=retry)
    if isinstance(exc, StepLimitError):
        # 508 Loop Detected (RFC 5842): the agent went round (model, tools, model, ...)
        # without a final answer and the server stopped it; a server-side failure.
        return ApiError(508, "step_limit_exceeded", str(exc))
    if isinstance(exc, BudgetExceededError):
        # 402: the run's money ran out (a limit the caller set, or the service's)
        spent = {"spent_usd": exc.spent_usd, "budget_usd": exc.budget_usd}
        return ApiError(402, BUDGET_EXCEEDED, str(exc), fields=spent)
    if isinstance(exc, AgentRunError):
        return ApiError(500, "run_failed", str(exc))
    failure = classify(exc)
    # Python's own ConnectionError is no provider's (a closed socket of ours, a tool's):
    # a bug until a client says otherwise; its TimeoutError stays a call's deadline.
    if failure is None or (failure.source == PYTHON and failure.kind is not FailureKind.TIMEOUT):
        return None
    status, kind, message = _PROVIDER_FAILURES[failure.kind]
    notes = "".join(f" {note}." for note in getattr(exc, "__notes__", ()))  # the retry's
    return ApiError(status, kind, message.format(error=type(exc).__name__) + notes)


async def post_run(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS_KEY]
    agent = request.app[RUNTIME_KEY].agent
    body = await read_json(request, settings.max_body_bytes, RUN_FIELDS)
    run = _run_request(body, request.headers.get(hdrs.ACCEPT, ""))
    parent = propagate.extract(_without_baggage(request.headers))
    notes = _budget_notes(agent, run)
    try:
        agent.check_input(run.input)
        if run.stream:
            return await _stream_run(request, agent, run, parent)
        result = await agent.arun(
            run.input,
            parent=parent,
            conversation_id=run.conversation_id,
            budget_usd=run.budget_usd,
        )
    except Exception as exc:
        mapped = _as_api_error(exc)
        if mapped is None:
            raise
        if mapped.kind == BUDGET_EXCEEDED:
            mapped.fields.update(notes)
        raise mapped from None
    return web.json_response(result.to_dict() | notes)


def _budget_notes(agent: Agent, run: RunRequest) -> dict[str, Any]:
    """What a run's answer says of its budget: capped at the service's limit
    (``budget_capped_usd``), or unable to stop unpriced calls (``budget_warning``)."""
    notes: dict[str, Any] = {}
    limit = agent.budget_usd
    if run.budget_usd is not None and limit is not None and run.budget_usd > limit:
        notes["budget_capped_usd"] = limit
    if run_budget(limit, run.budget_usd) is not None:
        warning = agent.unpriced_budget()
        if warning:
            notes["budget_warning"] = warning
    return notes


def _without_baggage(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The headers a propagator may read, without ``baggage``: the service uses none, and
    OpenTelemetry's baggage propagator logs a warning for every request whose header is
    over its size limit (any client could fill the log)."""
    kept = headers.copy()
    kept.popall("baggage", None)
    return kept


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def _stream_run(
    request: web.Request, agent: Agent, run: RunRequest, parent: Context
) -> web.StreamResponse:
    """Server-Sent Events: one event per run event, ending with ``result`` (or ``error``).
    The 200 and its headers go once the run is admitted (or with the first keep-alive
    of a run waiting for a slot): a run the load shedding refuses at once gets the
    plain 503 ``overloaded`` with Retry-After; one refused after waiting, an ``error``
    event.

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

    async def prepared() -> None:  # the 200: once admitted, or waiting for a slot
        if not response.prepared:
            await response.prepare(request)

    async def write(data: bytes) -> None:
        await prepared()
        await response.write(data)

    async def waiting() -> None:  # the run waits for a slot: say so, keep proxies patient
        await write(b": waiting for a run slot\n\n")

    events = agent.astream(
        run.input,
        parent=parent,
        conversation_id=run.conversation_id,
        on_wait=waiting,
        wait_interval=SSE_KEEPALIVE,
        budget_usd=run.budget_usd,
        on_admitted=prepared,
    )
    try:
        async with aclosing(events):
            async for event in events:
                await write(sse(event.type, event_data(event)))
    except Exception as exc:
        if not response.prepared and isinstance(exc, AdmissionRefused):
            raise  # refused before anything was sent: 503 overloaded, as an unstreamed run
        transport = request.transport
        if isinstance(exc, ConnectionResetError) and (transport is None or transport.is_closing()):
            return response  # the client went away; the stream was closed, the run cancelled
        mapped = _as_api_error(exc)  # the run's own error, a ConnectionResetError included
        if mapped is None:
            _logger.exception("streamed run failed")
            mapped = ApiError(500, "internal_error", "The run failed.")
        await write(sse("error", mapped.body()))
    await prepared()
    await response.write_eof()
    return response


_HTTP_KINDS_PREPARED: Final = _HTTP_KINDS | {417: "expectation_failed"}


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[hdrs.SERVER] = SERVER_NAME  # not aiohttp's name and version
    if (
        response.status >= 400
        and isinstance(response, web.Response)
        and response.content_type != "application/json"
    ):
        # An error aiohttp answered before any middleware ran (an Expect header it does
        # not know: 417 "Unknown Expect: ..." as text): the JSON error body all the same.
        # The hook runs once Content-Length is set: it is set again for the new body.
        kind = _HTTP_KINDS_PREPARED.get(response.status, "http_error")
        message = response.reason if response.status != 417 else _EXPECT_MESSAGE
        data = json.dumps(service_error_body(kind, message)).encode()
        response.body = data
        response.content_type = "application/json"
        response.charset = "utf-8"
        if hdrs.CONTENT_LENGTH in response.headers:
            response.headers[hdrs.CONTENT_LENGTH] = str(len(data))


_EXPECT_MESSAGE: Final = "The Expect header is not supported (only 100-continue)."


def create_app(
    settings: RuntimeSettings,
    telemetry: Telemetry,
    *,
    runtime: AgentRuntime | None = None,
    metrics_source: MetricsSource | None = None,
) -> web.Application:
    """The service (``metrics_source``: what ``/metrics`` renders instead of this
    process's registry: every worker's series under ``serve --workers``)."""
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
    app[BODY_BUDGET_KEY] = BodyBudget(MAX_BODY_BYTES_IN_FLIGHT)
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
    add_telemetry_routes(
        app,
        telemetry,
        readiness=[runtime_started],
        metrics_token=settings.metrics_token,
        metrics_source=metrics_source,
    )
    app.cleanup_ctx.append(lambda _: loop_lag_ctx(telemetry))
    add_openapi_route(app)
    app.router.add_post("/v1/runs", post_run)
    add_batch_routes(app)  # after the runtime's context: its batches end before it stops
    return app
