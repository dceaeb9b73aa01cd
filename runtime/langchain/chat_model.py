"""The chat model seam: any LangChain chat model, recorded at its own boundaries.

``InstrumentedChatModel`` (put first among a chat model's bases) records every call as
a ``chat {model}`` span with token usage and, for streams, time to first chunk and
per-chunk timing, through the very boundaries the instrumentor installs on every chat
model (``chat_calls.ChatBoundary``: one code path). It uses neither LangChain callbacks
nor agent middleware (measured: a do-nothing middleware alone made a zero-latency run
~1.7x slower). Its own ``_agenerate`` / ``_astream`` add retries only (every attempt a
``retry_attempt`` span under the call's). With the instrumentor installed as well, the
model's own boundary is the outer one and records; the instrumentor's passes the call
through (``recording.within``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, Callbacks
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import RunnableConfig
from langchain_openai import ChatOpenAI
from pydantic import Field

from agentwatch.telemetry import Telemetry, get_telemetry
from agentwatch.telemetry.names import OP_CHAT

from ..retry import Retrier
from .chat_calls import (
    ChatBoundary,
    messages_json,
    record_result,
    response_fields,
    start_llm_call,
)
from .rate_limited import rate_limited_call, rate_limited_stream

__all__ = [
    "InstrumentedChatModel",
    "InstrumentedChatOpenAI",
    "messages_json",
    "record_result",
    "response_fields",
    "start_llm_call",
]


class InstrumentedChatModel(BaseChatModel):
    """Put first among the bases of any chat model to record its every request::

    class InstrumentedChatOpenAI(InstrumentedChatModel, ChatOpenAI): ...
    """

    telemetry: Any = Field(default=None, exclude=True)
    """The ``Telemetry`` to record into (default: the process's)."""
    provider_name: str = Field(default="", exclude=True)
    """``gen_ai.provider.name``; "" (the default): the model's own, from its LangChain
    metadata (``providers.provider_name``: ``ChatAnthropic`` is ``anthropic``)."""
    retry_policy: Any = Field(default=None, exclude=True)
    """A ``RetryPolicy``: every attempt is ours and visible (set the client's own
    ``max_retries=0``). None: one attempt."""
    client_limiter: Any = Field(default=None, exclude=True)
    """A ``RateLimiter`` every attempt waits for (``rate_limited.py``; not LangChain's own
    ``rate_limiter``, which knows no tokens and no headers). None: none."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A model that cannot stream keeps LangChain's own ``_astream``: LangChain
        streams any model whose class defines one, and the mixin's (retries until the
        first chunk) would make it try (``NotImplementedError`` under ``astream`` or a
        graph's ``stream_mode="messages"``)."""
        super().__init_subclass__(**kwargs)
        below = cls.__mro__[cls.__mro__.index(InstrumentedChatModel) + 1 :]
        streams = any(
            "_astream" in base.__dict__ or "_stream" in base.__dict__
            for base in below
            if base is not BaseChatModel
        )
        if not streams and "_astream" not in cls.__dict__:
            cls._astream = BaseChatModel._astream  # type: ignore[method-assign]

    def _telemetry(self) -> Telemetry:
        telemetry: Telemetry = self.telemetry or get_telemetry()
        return telemetry

    def _boundary(self) -> ChatBoundary:
        return ChatBoundary(self.telemetry, self.provider_name or None)

    # -- the recorded boundaries (chat_calls.ChatBoundary) ---------------------------
    def generate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Callbacks = None,
        **kwargs: Any,
    ) -> LLMResult:
        result: LLMResult = self._boundary().generate(
            super().generate, self, (messages, stop, callbacks), kwargs
        )
        return result

    async def agenerate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Callbacks = None,
        **kwargs: Any,
    ) -> LLMResult:
        result: LLMResult = await self._boundary().agenerate(
            super().agenerate, self, (messages, stop, callbacks), kwargs
        )
        return result

    def _generate_with_cache(self, *args: Any, **kwargs: Any) -> ChatResult:
        return self._boundary().generate_with_cache(
            super()._generate_with_cache, self, args, kwargs
        )

    async def _agenerate_with_cache(self, *args: Any, **kwargs: Any) -> ChatResult:
        return await self._boundary().agenerate_with_cache(
            super()._agenerate_with_cache, self, args, kwargs
        )

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        return self._boundary().stream(
            super().stream, self, (input, config), {"stop": stop, **kwargs}
        )

    def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        return self._boundary().astream(
            super().astream, self, (input, config), {"stop": stop, **kwargs}
        )

    # -- retries beneath the call's span ---------------------------------------------
    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        generate = super()._agenerate
        attempt = rate_limited_call(
            self,
            messages,
            kwargs,
            lambda: generate(messages, stop=stop, run_manager=run_manager, **kwargs),
        )
        if self.retry_policy is None:
            return await attempt()
        return await Retrier(self.retry_policy, self._telemetry()).call(OP_CHAT, attempt)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        opener = super()._astream
        open_stream = rate_limited_stream(
            self,
            messages,
            kwargs,
            lambda: opener(messages, stop=stop, run_manager=run_manager, **kwargs),
        )
        stream: AsyncIterator[ChatGenerationChunk]
        if self.retry_policy is None:
            stream = open_stream()
        else:
            retrier = Retrier(self.retry_policy, self._telemetry())
            stream = _retried_until_first_chunk(retrier, open_stream)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()


async def _retried_until_first_chunk(
    retrier: Retrier, open_stream: Callable[[], AsyncIterator[ChatGenerationChunk]]
) -> AsyncGenerator[ChatGenerationChunk, None]:
    """A stream whose opening is retried until its first chunk arrives; after that the
    caller has seen output, so an error ends the stream instead of repeating it."""

    async def first_chunk() -> tuple[
        ChatGenerationChunk | None, AsyncIterator[ChatGenerationChunk]
    ]:
        stream = open_stream()
        try:
            return await anext(stream), stream
        except StopAsyncIteration:
            return None, stream
        except BaseException:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
            raise

    first, stream = await retrier.call(OP_CHAT, first_chunk)
    try:
        if first is None:
            return
        yield first
        async for chunk in stream:
            yield chunk
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


class InstrumentedChatOpenAI(InstrumentedChatModel, ChatOpenAI):
    """``ChatOpenAI`` whose every request is a ``chat {model}`` span plus GenAI metrics."""
