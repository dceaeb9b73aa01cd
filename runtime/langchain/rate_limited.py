"""A chat model's requests under the client-side rate limiter (``runtime/rate_limiter.py``).

Each attempt (a retry is a request too) first waits for its model's budget, with its
tokens estimated from the prompt (about four characters a token) plus the answer's
``max_tokens`` (else ``OUTPUT_ESTIMATE``); when it ends, the estimate is corrected from
the usage the model reported and the provider's rate limit headers are learned: a
non-streamed answer's (``ChatOpenAI(include_response_headers=True)`` puts them in the
generation's info), a stream's first chunk's, or a refusal's (the SDK error's HTTP
response). A refused request (an HTTP error status) used no tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from ..provider_errors import classify
from ..rate_limiter import Permit, RateLimiter
from .chat_calls import request_model

OUTPUT_ESTIMATE: Final = 256  # tokens of an answer whose max_tokens is not set
CHARS_PER_TOKEN: Final = 4
TOKENS_PER_MESSAGE: Final = 4  # a message's own framing


def estimate_tokens(messages: Sequence[BaseMessage], max_tokens: int | None) -> int:
    """The tokens a request will use, before it is sent (corrected after)."""
    chars = sum(len(m.text) + len(str(getattr(m, "tool_calls", "") or "")) for m in messages)
    prompt = chars // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE * len(messages)
    return prompt + (max_tokens or OUTPUT_ESTIMATE)


def _headers(generation: ChatGeneration | None) -> Mapping[str, str] | None:
    if generation is None:
        return None
    headers = (generation.generation_info or {}).get("headers")
    return headers if isinstance(headers, Mapping) else None


def _used(generation: ChatGeneration | None) -> int | None:
    usage = getattr(generation.message, "usage_metadata", None) if generation else None
    if not usage:
        return None
    return int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))


async def _settle_failure(permit: Permit, exc: BaseException) -> None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    failure = classify(exc)
    refused = failure is not None and failure.status is not None
    await permit.settle(headers=headers if isinstance(headers, Mapping) else None, sent=not refused)


async def limited_call(
    limiter: RateLimiter,
    model: str,
    estimate: int,
    call: Callable[[], Awaitable[ChatResult]],
) -> ChatResult:
    """``call()`` once ``model``'s budget allows ``estimate`` tokens, then settled."""
    permit = await limiter.acquire(model, estimate)
    try:
        result = await call()
    except Exception as exc:
        await _settle_failure(permit, exc)
        raise
    generation = result.generations[0] if result.generations else None
    await permit.settle(used_tokens=_used(generation), headers=_headers(generation))
    return result


async def limited_stream(
    limiter: RateLimiter,
    model: str,
    estimate: int,
    open_stream: Callable[[], AsyncIterator[ChatGenerationChunk]],
) -> AsyncIterator[ChatGenerationChunk]:
    """The stream ``open_stream()`` opens once ``model``'s budget allows, settled when it
    ends (its first chunk's headers, its usage chunk's tokens), fails or is closed."""
    permit = await limiter.acquire(model, estimate)
    headers: Mapping[str, str] | None = None
    used: int | None = None
    stream = open_stream()
    try:
        async for chunk in stream:
            headers = headers or _headers(chunk)
            used = _used(chunk) or used
            yield chunk
    except Exception as exc:
        await _settle_failure(permit, exc)
        raise
    else:
        await permit.settle(used_tokens=used, headers=headers)
    finally:
        close: Any = getattr(stream, "aclose", None)
        if close is not None:
            await close()


def _limiter_of(chat_model: Any, options: Mapping[str, Any]) -> tuple[RateLimiter, str] | None:
    limiter = getattr(chat_model, "client_limiter", None)
    if not isinstance(limiter, RateLimiter):
        return None
    model = request_model(chat_model, options)
    return (limiter, model) if limiter.limits_model(model) else None


def _max_tokens(chat_model: Any, options: Mapping[str, Any]) -> int | None:
    for value in (
        options.get("max_completion_tokens"),
        options.get("max_tokens"),
        getattr(chat_model, "max_tokens", None),
    ):
        if isinstance(value, int) and value > 0:
            return value
    return None


def rate_limited_call(
    chat_model: Any,
    messages: Sequence[BaseMessage],
    options: Mapping[str, Any],
    call: Callable[[], Awaitable[ChatResult]],
) -> Callable[[], Awaitable[ChatResult]]:
    """``call`` as it is, or under ``chat_model.client_limiter`` when its model is limited."""
    found = _limiter_of(chat_model, options)
    if found is None:
        return call
    limiter, model = found
    estimate = estimate_tokens(messages, _max_tokens(chat_model, options))
    return lambda: limited_call(limiter, model, estimate, call)


def rate_limited_stream(
    chat_model: Any,
    messages: Sequence[BaseMessage],
    options: Mapping[str, Any],
    open_stream: Callable[[], AsyncIterator[ChatGenerationChunk]],
) -> Callable[[], AsyncIterator[ChatGenerationChunk]]:
    """``open_stream`` as it is, or under ``chat_model.client_limiter``."""
    found = _limiter_of(chat_model, options)
    if found is None:
        return open_stream
    limiter, model = found
    estimate = estimate_tokens(messages, _max_tokens(chat_model, options))
    return lambda: limited_stream(limiter, model, estimate, open_stream)
