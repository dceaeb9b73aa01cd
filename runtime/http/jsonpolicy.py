"""The API's one way of reading a request body: ``read_json`` and the strict JSON policy.

Every JSON body goes through one strict parser (``parse_json``): UTF-8, an object with
only the route's fields, no duplicate keys, no NaN/Infinity, integers of at most
``MAX_INT_DIGITS`` digits, nesting at most ``MAX_JSON_DEPTH`` deep, no lone surrogate
(I-JSON, RFC 7493). A body over ``INLINE_PARSE_BYTES`` is parsed in a worker thread, one
at a time, and the checks run at C speed: no body holds the event loop.

Before a byte of the body is read, ``read_json`` refuses a body larger than the route
takes (413), one that is not ``application/json`` or comes with a ``Content-Encoding``
(415: the service's clients send plain JSON, and inflating a gzip bomb on the event loop
froze it for seconds), and one that would take the app's ``BodyBudget`` (the bytes of
bodies being received at once, ``MAX_BODY_BYTES_IN_FLIGHT``) past its ceiling (503 with
``Retry-After``). A body that does not arrive within ``BODY_TIMEOUT`` is 408.

This module imports only aiohttp and the standard library: the builtin model's server
(imported while ``agentwatch.runtime`` is still being initialised) uses it at its top.
``agentwatch.runtime.service.app`` re-exports every name here.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from aiohttp import hdrs, web

PARSING_KEY: Final = web.AppKey("agentwatch_parsing", asyncio.Semaphore)  # parse_json_async

MAX_JSON_DEPTH: Final = 32  # objects and arrays inside one another
MAX_INT_DIGITS: Final = 19  # an integer literal (int64 has 19 digits)
BODY_TIMEOUT: Final = 30.0  # seconds to receive a request body
INLINE_PARSE_BYTES: Final = 64 * 1024  # larger bodies are parsed in a worker thread
# Bytes of request bodies being received and parsed at once, per app (per process for
# `agentwatch serve`): 64 bodies of the 1 MiB limit. 300 connections that each sent
# 1 MiB - 100 bytes of a 1 MiB body and stalled held +378 MiB for the 30 s body timeout.
MAX_BODY_BYTES_IN_FLIGHT: Final = 64 * 1024 * 1024
BODY_RETRY_AFTER: Final = 1  # seconds, the Retry-After of a 503 for a full budget
_IDENTITY: Final = frozenset({"", "identity"})


class ApiError(Exception):
    """An error answered as JSON with ``status``."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = dict(headers or {})  # e.g. Retry-After with a 429
        self.fields = dict(fields or {})  # more of the error object, e.g. spent_usd

    def body(self) -> dict[str, Any]:
        """The error object: ``{"type", "message", **fields}``."""
        return {"type": self.kind, "message": self.message, **self.fields}


class BodyBudget:
    """The bytes of request bodies an app receives at once: a body reserves what it
    announced (``Content-Length``, or the route's limit when chunked) before a byte is
    read, and gives it back once parsed; past ``limit``, ``ApiError(503)``."""

    def __init__(self, limit: int = MAX_BODY_BYTES_IN_FLIGHT) -> None:
        if limit < 1:
            raise ValueError(f"the body budget must be at least 1 byte, got {limit}")
        self.limit = limit
        self.held = 0

    @contextmanager
    def holding(self, size: int) -> Iterator[None]:
        if size > 0 and self.held + size > self.limit:
            raise ApiError(
                503,
                "too_many_bodies",
                f"The server is receiving {self.limit} bytes of request bodies already; "
                f"retry in {BODY_RETRY_AFTER} s.",
                headers={hdrs.RETRY_AFTER: str(BODY_RETRY_AFTER)},
            )
        self.held += size
        try:
            yield
        finally:
            self.held -= size


BODY_BUDGET_KEY: Final = web.AppKey("agentwatch_body_budget", BodyBudget)


def check_body_headers(request: web.BaseRequest, max_bytes: int) -> None:
    """What ``read_json`` refuses from the head alone: 413 for a body announced larger
    than ``max_bytes``, 415 for one not ``application/json`` or with a Content-Encoding."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, "payload_too_large", f"The body is larger than {max_bytes} bytes.")
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    if encoding not in _IDENTITY:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Encoding {encoding[:40]!r} is not accepted: send the body uncompressed.",
        )


async def read_json(
    request: web.Request, max_bytes: int, fields: Collection[str]
) -> dict[str, Any]:
    """The request's JSON object (``parse_json``), or an ApiError: 413 / 415 before reading
    (``check_body_headers``), 503 with Retry-After when the app's ``BODY_BUDGET_KEY`` (if
    it has one) is full, 408 when the body does not arrive within ``BODY_TIMEOUT``."""
    check_body_headers(request, max_bytes)
    budget = request.app.get(BODY_BUDGET_KEY)
    size = request.content_length if request.content_length is not None else max_bytes
    with budget.holding(size) if budget is not None else _nothing():
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                raw = await request.read()  # aiohttp stops at client_max_size with 413
        except TimeoutError:
            raise ApiError(
                408, "request_timeout", f"The body did not arrive within {BODY_TIMEOUT:g} s."
            ) from None
        return await parse_json_async(raw, fields, request.app[PARSING_KEY])


@contextmanager
def _nothing() -> Iterator[None]:
    yield


class JsonPolicyError(ValueError):
    """The body is JSON that the API does not accept (its message says why)."""


_JsonPolicyError = JsonPolicyError  # the name before it was public


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonPolicyError(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return obj


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonPolicyError(f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonPolicyError(f"a number is out of range ({text[:20]})")
    return value


def _no_constant(name: str) -> Any:
    raise JsonPolicyError(f"{name} is not a JSON number")


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
    raise JsonPolicyError(f"nested deeper than {MAX_JSON_DEPTH} levels")


def _check_surrogates(raw: bytes, body: Any) -> None:
    """No lone surrogate in any string. UTF-8 text cannot hold one: only a ``\\uD8xx``
    style escape can, so the tree is checked (by the C encoder) only when the raw
    text has such an escape."""
    if _SURROGATE_ESCAPE.search(raw) is None:
        return
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise JsonPolicyError("a string holds a lone surrogate") from None


def _decode(raw: bytes) -> Any:
    # Decoded first: the checks below read well-formed JSON only (the decoder's own
    # recursion limit stops a body thousands deep: RecursionError).
    body = _DECODER.decode(raw.decode("utf-8"))
    _check_depth(raw)
    _check_surrogates(raw, body)
    return body


def decode_json(raw: bytes) -> Any:
    """Any JSON value ``raw`` holds under the policy (no check of its shape or fields);
    ``ApiError(400, "invalid_json")`` saying why it is refused."""
    try:
        return _decode(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "The body is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"The body is not valid JSON: {exc}") from None
    except RecursionError:
        message = f"The body is not accepted: nested deeper than {MAX_JSON_DEPTH} levels."
        raise ApiError(400, "invalid_json", message) from None
    except JsonPolicyError as exc:
        raise ApiError(400, "invalid_json", f"The body is not accepted: {exc}.") from None


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
    body = decode_json(raw)
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "The body must be a JSON object.")
    unknown = set(body) - set(fields)
    if unknown:
        names = ", ".join(sorted(name[:40] for name in unknown)[:10])
        raise ApiError(422, "invalid_request", f"Unknown fields: {names}.")
    return body
