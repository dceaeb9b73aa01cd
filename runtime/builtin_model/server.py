"""The builtin model over HTTP: ``POST /v1/chat/completions``, ``GET /v1/models``.

OpenAI's wire format, non-streamed and streamed (SSE with tool-call deltas and
``stream_options.include_usage``), so that ``openai`` and LangChain's ``ChatOpenAI``
talk to it unchanged. Latency, streaming pace and faults come from ``ModelBehavior``.

It runs on the service's event loop (``agentwatch serve``) on an unauthenticated
loopback port, so it meets hostile input as the service does, with the same defences:

- every error is OpenAI's JSON (``{"error": {"message", "type", "param", "code"}}``),
  never a traceback or plain text; no response names the server's software;
- served with the service's connection limits (``serving.make_runner``: head size and
  time, idle timeout, parser errors as JSON), aiohttp's per-line limits
  (``serving.handler_limits``);
- the body is at most ``MAX_BODY_BYTES`` and parsed by the service's strict JSON policy
  (``server.read_json``: no NaN/Infinity, duplicate keys, huge integers, deep nesting,
  lone surrogates; only OpenAI's request parameters), in a worker thread when large;
- a compressed body (``Content-Encoding`` other than identity) is refused with 415,
  never inflated (``auto_decompress`` is off: a gzip bomb costs nothing);
- every field the brain reads is type-checked (400, never 500: ``options.py`` for
  ``tools``, ``tool_choice``, ``response_format``), counts are bounded (``MAX_MESSAGES``,
  ``MAX_ITEMS``), the brain reads a bounded part of the text (``brain.SCAN_CHARS``) and
  fills a schema within a bounded budget (``schema_values``: a schema beyond it is a
  400), so no request holds the loop.

Its answers are the brain's (``brain.py``), or a script's (``ModelBehavior.script``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from openai.types.chat.completion_create_params import CompletionCreateParamsBase

from ..http.jsonpolicy import PARSING_KEY, ApiError, read_json
from ..http.serving import SERVER_NAME, handler_limits, make_runner, start_site
from .behavior import ModelBehavior
from .brain import PIECE, Reply, respond
from .limits import ServedLimits
from .options import MAX_NAME_CHARS, OptionError
from .script import Script

_logger = logging.getLogger("agentwatch.model")

MAX_BODY_BYTES: Final = 4 * 1024 * 1024  # a Chat Completions request (the agent's: ~10 KiB)
MAX_MESSAGES: Final = 2048  # messages in one request
MAX_ITEMS: Final = 128  # tools, tool calls in a message, content parts in a message
INLINE_BYTES: Final = 64 * 1024  # larger requests are checked and answered in a worker thread
_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool"})
# OpenAI's request parameters, as the openai client knows them: any other is refused, as
# OpenAI itself refuses it ("Unrecognized request argument").
CHAT_FIELDS: Final = frozenset(CompletionCreateParamsBase.__annotations__) | {"stream"}


class ModelState:
    """Mutable per-server state: the behavior in force, the request count, the dice."""

    def __init__(self, behavior: ModelBehavior) -> None:
        self.requests = 0
        self.configure(behavior)

    def configure(self, behavior: ModelBehavior) -> None:
        self.behavior = behavior
        self.rng = random.Random(behavior.seed)
        self.script = Script(behavior.script)
        limited = behavior.rate_limit_rpm is not None or behavior.rate_limit_tpm is not None
        self.limits = (
            ServedLimits(
                behavior.rate_limit_rpm, behavior.rate_limit_tpm, behavior.rate_limit_burst
            )
            if limited
            else None
        )
        self.rate_limited = 0  # requests refused with 429 by the limits

    def fault(self, number: int) -> str | None:
        b = self.behavior
        if number <= b.fail_first:
            return "fail"
        if number <= b.fail_first + b.hang_first:
            return "hang"
        roll = self.rng.random()
        if roll < b.error_rate:
            return "fail"
        if roll < b.error_rate + b.hang_rate:
            return "hang"
        if roll < b.error_rate + b.hang_rate + b.disconnect_rate:
            return "disconnect"
        return None


STATE_KEY: Final = web.AppKey("agentwatch_model_state", ModelState)


def openai_error(
    status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return web.json_response(body, status=status)


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
        message = exc.reason
        if exc.status == 413:
            message = f"The request body is larger than {MAX_BODY_BYTES} bytes."
        return openai_error(exc.status, message, kind)
    except _BadRequest as exc:
        return openai_error(exc.status, str(exc), param=exc.param)
    except ConnectionResetError:  # the client went away (mid-body, mid-stream): normal
        _logger.debug("builtin model: client disconnected from %s", request.path)
        return web.Response(status=499, reason="Client Closed Request")  # read by nobody
    except asyncio.CancelledError:  # the same, seen by the runner (handler_cancellation)
        _logger.debug("builtin model: client disconnected (or server stopping): %s", request.path)
        raise
    except Exception:
        _logger.exception("builtin model: unexpected error")
        return openai_error(500, "The builtin model failed on this request.", "server_error")


@dataclass(frozen=True, slots=True)
class _Chat:
    """A checked request and the brain's answer to it."""

    model: str
    stream: bool
    include_usage: bool
    messages: list[Any]
    reply: Reply
    cached: bool = False  # a prompt_cache_key was given: cached prompt tokens reported


def _answer(body: dict[str, Any]) -> _Chat:
    """Check ``body`` (``_BadRequest`` for what the brain cannot read) and answer it."""
    model = body.get("model")
    if not isinstance(model, str) or not model or len(model) > MAX_NAME_CHARS:
        raise _BadRequest(f"'model' must be a string of 1-{MAX_NAME_CHARS} characters.", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("'messages' must be a non-empty array.", "messages")
    if len(messages) > MAX_MESSAGES:
        raise _BadRequest(f"'messages' holds more than {MAX_MESSAGES} messages.", "messages")
    for index, message in enumerate(messages):
        _check_message(index, message)
    tools = _array(body.get("tools"), "tools", "tools")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _BadRequest("'stream' must be a boolean.", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _BadRequest("'stream_options' must be an object.", "stream_options")
    include_usage = (options or {}).get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise _BadRequest(
            "'stream_options.include_usage' must be a boolean.", "stream_options.include_usage"
        )
    try:
        reply = respond(
            messages,
            tools,
            tool_choice=body.get("tool_choice"),
            response_format=body.get("response_format"),
            parallel_tool_calls=body.get("parallel_tool_calls"),
            seed=body.get("seed"),
            prompt_cache_key=body.get("prompt_cache_key"),
        )
    except OptionError as exc:
        raise _BadRequest(str(exc), exc.param) from None
    return _Chat(model, stream, include_usage, messages, reply, "prompt_cache_key" in body)


def _array(value: Any, param: str, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise _BadRequest(f"{param} must be an array of at most {MAX_ITEMS} {what}.", param)
    return value


def _string(value: Any, param: str, *, bounded: bool = True) -> None:
    if not isinstance(value, str) or (bounded and len(value) > MAX_NAME_CHARS):
        limit = f" of at most {MAX_NAME_CHARS} characters" if bounded else ""
        raise _BadRequest(f"{param} must be a string{limit}.", param)


def _check_message(index: int, message: Any) -> None:
    at = f"messages[{index}]"
    if not isinstance(message, dict) or message.get("role") not in _ROLES:
        raise _BadRequest(f"{at} must be an object with a role in {sorted(_ROLES)}.", at)
    content = message.get("content")
    if isinstance(content, list):
        for number, part in enumerate(_array(content, f"{at}.content", "parts")):
            where = f"{at}.content[{number}]"
            if not isinstance(part, dict):
                raise _BadRequest(f"{where} must be an object.", where)
            if "text" in part:
                _string(part["text"], f"{where}.text", bounded=False)
    elif content is not None and not isinstance(content, str):
        raise _BadRequest(f"{at}.content must be a string or an array of parts.", f"{at}.content")
    for name in ("tool_call_id", "name"):
        if message.get(name) is not None:
            _string(message[name], f"{at}.{name}")
    for number, call in enumerate(_array(message.get("tool_calls"), f"{at}.tool_calls", "calls")):
        where = f"{at}.tool_calls[{number}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise _BadRequest(
                f"{where} must be {{'id': ..., 'type': 'function', 'function': {{...}}}}.", where
            )
        _string(call.get("id"), f"{where}.id")
        _string(function.get("name"), f"{where}.function.name")
        if function.get("arguments") is not None:
            _string(function["arguments"], f"{where}.function.arguments", bounded=False)


async def _read(request: web.Request) -> _Chat:
    """The request, read and parsed by the service's strict policy, checked and answered:
    in a worker thread (one at a time) when large, so that no request holds the loop."""
    try:
        body = await read_json(request, MAX_BODY_BYTES, CHAT_FIELDS)
    except ApiError as exc:  # the service's error: OpenAI's shape, 400 for a bad shape
        raise _BadRequest(exc.message, status=400 if exc.status == 422 else exc.status) from None
    size = request.content_length
    if size is not None and size <= INLINE_BYTES:
        return _answer(body)
    async with request.app[PARSING_KEY]:
        return await asyncio.to_thread(_answer, body)


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.requests += 1
    number = state.requests
    chat = await _read(request)
    model = chat.model

    behavior = state.behavior
    fault = state.fault(number)
    if fault == "fail":
        return _failure(behavior)
    if fault == "hang":
        await asyncio.sleep(behavior.hang_for)  # the injected fault: an upstream that hangs
        return openai_error(504, "The builtin model timed out (injected hang).", "timeout")
    reply = state.script.take(chat.messages, cached=chat.cached) or chat.reply
    headers: dict[str, str] = {}
    if state.limits is not None:
        admitted, headers = state.limits.admit(reply.prompt_tokens + reply.completion_tokens)
        if not admitted:
            state.rate_limited += 1
            refused = openai_error(429, "Rate limit reached (builtin model).", "rate_limit_error")
            refused.headers.update(headers)
            return refused

    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    if chat.stream:
        return await _stream(
            request,
            behavior,
            reply,
            model,
            completion_id,
            _usage(reply, chat.cached) if chat.include_usage else None,
            fault == "disconnect",
            headers,
        )
    if behavior.latency:
        await asyncio.sleep(behavior.latency)  # configured model latency
    message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls
        ]
    return web.json_response(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": reply.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": _usage(reply, chat.cached),
        },
        headers=headers,
    )


def _usage(reply: Reply, cached: bool = False) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }
    if cached:  # OpenAI's shape; prompt_tokens includes the cached ones
        usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens}
    return usage


def _failure(behavior: ModelBehavior) -> web.Response:
    status = behavior.fail_status
    if status == 429:
        response = openai_error(429, "Rate limit reached (injected).", "rate_limit_error")
        if behavior.retry_after is not None:
            response.headers["Retry-After"] = f"{behavior.retry_after:g}"
        return response
    return openai_error(status, f"The builtin model failed (injected {status}).", "server_error")


def _deltas(reply: Reply) -> list[dict[str, Any]]:
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": piece} for piece in PIECE.findall(reply.content)]
    for index, call in enumerate(reply.tool_calls):
        head = {"index": index, "id": call.id, "type": "function"}
        deltas.append({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]})
        step = max(1, len(call.arguments) // 3)
        for start in range(0, len(call.arguments), step):
            piece = call.arguments[start : start + step]
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    return deltas


async def _stream(
    request: web.Request,
    behavior: ModelBehavior,
    reply: Reply,
    model: str,
    completion_id: str,
    usage: dict[str, Any] | None,
    disconnect: bool,
    headers: dict[str, str],
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers}
    )
    await response.prepare(request)
    created = int(time.time())

    async def send(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> None:
        chunk: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

    deltas = _deltas(reply)
    gap = 1.0 / behavior.tokens_per_second if behavior.tokens_per_second else 0.0
    try:
        for position, delta in enumerate(deltas):
            if position == 0 and behavior.time_to_first_token:
                await asyncio.sleep(behavior.time_to_first_token)  # configured TTFT
            elif position > 0 and gap:
                await asyncio.sleep(gap)  # configured token rate
            if disconnect and position == len(deltas) // 2:
                if request.transport is not None:
                    request.transport.abort()  # the injected fault: connection lost mid-stream
                return response
            await send([{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}])
        finish = {"index": 0, "delta": {}, "finish_reason": reply.finish_reason, "logprobs": None}
        await send([finish])
        if usage is not None:  # stream_options.include_usage
            await send([], usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except ConnectionResetError:  # aiohttp's ClientConnectionResetError too
        # The client closed the stream (a run cancelled, a caller gone): normal.
        _logger.debug("builtin model: the client closed the stream")
    return response


async def _models(request: web.Request) -> web.Response:
    behavior = request.app[STATE_KEY].behavior
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "agentwatch"}
        for name in behavior.models
    ]
    return web.json_response({"object": "list", "data": data})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[hdrs.SERVER] = SERVER_NAME  # not aiohttp's name and version


def create_model_app(behavior: ModelBehavior | None = None) -> web.Application:
    """The builtin model as an aiohttp application. Serve it with ``serving.make_runner``
    (as ``BuiltinModelServer`` and ``agentwatch model`` do) for the connection limits."""
    app = web.Application(
        middlewares=[_errors],
        client_max_size=MAX_BODY_BYTES,
        # aiohttp's per-line limits, and no inflating of compressed bodies (refused: 415)
        handler_args=handler_limits(),
    )
    app.on_response_prepare.append(_server_header)
    app[STATE_KEY] = ModelState(behavior or ModelBehavior())
    app[PARSING_KEY] = asyncio.Semaphore(1)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/healthz", _healthz)
    return app


class BuiltinModelServer:
    """The builtin model on a loopback port, for ``async with``."""

    def __init__(
        self, behavior: ModelBehavior | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.app = create_model_app(behavior)
        self._host = host
        self._port = port
        self._runner: web.BaseRunner | None = None
        self.port = 0

    @property
    def state(self) -> ModelState:
        return self.app[STATE_KEY]

    @property
    def requests(self) -> int:
        return self.state.requests

    def configure(self, behavior: ModelBehavior) -> None:
        self.state.configure(behavior)

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}/v1"

    async def start(self) -> BuiltinModelServer:
        """Listen (``serving.BindError`` when it cannot), with the service's limits."""
        runner = make_runner(self.app, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await start_site(runner, self._host, self._port)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BuiltinModelServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
