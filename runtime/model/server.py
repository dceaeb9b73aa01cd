"""The builtin model over HTTP: ``POST /v1/chat/completions``, ``GET /v1/models``.

OpenAI's wire format, non-streamed and streamed (SSE with tool-call deltas and
``stream_options.include_usage``), so that ``openai`` and LangChain's ``ChatOpenAI``
talk to it unchanged. Malformed requests get OpenAI-style JSON errors, never a
traceback. Latency, streaming pace and faults come from ``ModelBehavior``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler

from .behavior import ModelBehavior
from .brain import PIECE, Reply, respond

_logger = logging.getLogger("agentwatch.model")

MAX_BODY_BYTES: Final = 8 * 1024 * 1024
_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool"})


class ModelState:
    """Mutable per-server state: the behavior in force, the request count, the dice."""

    def __init__(self, behavior: ModelBehavior) -> None:
        self.requests = 0
        self.configure(behavior)

    def configure(self, behavior: ModelBehavior) -> None:
        self.behavior = behavior
        self.rng = random.Random(behavior.seed)

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
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
        return openai_error(exc.status, exc.reason, kind)
    except _BadRequest as exc:
        return openai_error(400, str(exc), param=exc.param)
    except ConnectionResetError:  # the client went away (mid-body, mid-stream): normal
        _logger.debug("builtin model: client disconnected from %s", request.path)
        return web.Response(status=499, reason="Client Closed Request")  # read by nobody
    except Exception:
        _logger.exception("builtin model: unexpected error")
        return openai_error(500, "The builtin model failed on this request.", "server_error")


def _validate(body: Any) -> tuple[str, list[Mapping[str, Any]], list[str], bool, bool]:
    if not isinstance(body, dict):
        raise _BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("'model' must be a non-empty string.", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("'messages' must be a non-empty array.", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise _BadRequest(
                f"messages[{index}] must be an object with a role in {sorted(_ROLES)}.",
                f"messages[{index}]",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _BadRequest(
                f"messages[{index}].content must be a string or an array of parts.",
                f"messages[{index}].content",
            )
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise _BadRequest("'tools' must be an array.", "tools")
    names = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _BadRequest("each tool must be {'type': 'function', 'function': {'name': ...}}.")
        names.append(function["name"])
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _BadRequest("'stream' must be a boolean.", "stream")
    options = body.get("stream_options") or {}
    include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
    return model, messages, names, stream, include_usage


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.requests += 1
    number = state.requests
    if request.content_type != "application/json":
        return openai_error(415, "Send the request body as application/json.")
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise _BadRequest(f"The body is not valid JSON: {exc.msg} at position {exc.pos}.") from None
    except UnicodeDecodeError:
        raise _BadRequest("The body is not valid UTF-8.") from None
    model, messages, tools, stream, include_usage = _validate(body)

    behavior = state.behavior
    fault = state.fault(number)
    if fault == "fail":
        return _failure(behavior)
    if fault == "hang":
        await asyncio.sleep(behavior.hang_for)  # the injected fault: an upstream that hangs
        return openai_error(504, "The builtin model timed out (injected hang).", "timeout")

    reply = respond(messages, tools)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    if stream:
        return await _stream(
            request, behavior, reply, model, completion_id, include_usage, fault == "disconnect"
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
            "usage": _usage(reply),
        }
    )


def _usage(reply: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


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
    include_usage: bool,
    disconnect: bool,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    created = int(time.time())

    async def send(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> None:
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
        if include_usage:
            await send([], _usage(reply))
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


def create_model_app(behavior: ModelBehavior | None = None) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
    app[STATE_KEY] = ModelState(behavior or ModelBehavior())
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_get("/v1/models", _models)
    return app


class BuiltinModelServer:
    """The builtin model on a loopback port, for ``async with``."""

    def __init__(
        self, behavior: ModelBehavior | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.app = create_model_app(behavior)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
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
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BuiltinModelServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
