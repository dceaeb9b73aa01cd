"""The chat model seam: ``ChatOpenAI`` instrumented at its own async boundary.

``InstrumentedChatOpenAI`` wraps ``_agenerate`` and ``_astream`` — the calls that go
to the model — in an LLM-call invocation, so every request is a ``chat {model}`` span
with token usage and, for streams, time to first chunk and per-chunk timing. It uses
neither LangChain callbacks nor agent middleware (measured: a do-nothing middleware
alone made a zero-latency run ~1.7x slower). ``start_llm_call`` and ``record_result``
(with ``response_fields``, which reads a LangChain result once) record a call for this
wrapper and for the callback handler alike.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from opentelemetry.context import Context
from pydantic import Field

from agentwatch.telemetry import LlmCallInvocation, Telemetry, get_telemetry, instrument_stream
from agentwatch.telemetry.names import OP_CHAT, OUTCOME_CANCELLED

from ..retry import Retrier


def response_fields(
    generations: Sequence[ChatGeneration], llm_output: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``set_response`` keyword arguments from a LangChain chat result."""
    fields: dict[str, Any] = {}
    reasons = []
    for generation in generations:
        info = generation.generation_info or {}
        reason = info.get("finish_reason")
        if reason:
            reasons.append(str(reason))
    if reasons:
        fields["finish_reasons"] = reasons
    if generations:
        message = generations[0].message
        usage = getattr(message, "usage_metadata", None)
        if usage:
            fields["input_tokens"] = int(usage.get("input_tokens", 0))
            fields["output_tokens"] = int(usage.get("output_tokens", 0))
        metadata = message.response_metadata or {}
        model = metadata.get("model_name") or (llm_output or {}).get("model_name")
        if model:
            fields["response_model"] = str(model)
        response_id = metadata.get("id") or message.id
        if response_id:
            fields["response_id"] = str(response_id)
    return fields


def messages_json(messages: Sequence[BaseMessage]) -> str:
    """Messages as GenAI-convention JSON, for spans when content capture is on."""
    entries = []
    for m in messages:
        entry: dict[str, Any] = {"role": m.type, "parts": [{"type": "text", "content": m.text}]}
        tool_calls = getattr(m, "tool_calls", None)
        if tool_calls:
            entry["tool_calls"] = tool_calls
        entries.append(entry)
    return json.dumps(entries, default=str)


def start_llm_call(
    telemetry: Telemetry,
    request_model: str,
    provider: str,
    messages: Sequence[BaseMessage],
    *,
    stream: bool,
    parent: Context | None = None,
) -> LlmCallInvocation:
    """An LLM call's invocation, with its input messages when content capture is on."""
    invocation = telemetry.llm_call(request_model, provider, stream=stream, parent=parent)
    if telemetry.capturing and messages:
        invocation.capture(input_messages=messages_json(messages))
    return invocation


def record_result(
    invocation: LlmCallInvocation,
    generations: Sequence[ChatGeneration],
    llm_output: Mapping[str, Any] | None,
    capturing: bool,
) -> None:
    """What the model answered, on the call's span and metrics (its messages only when
    content capture is on)."""
    invocation.set_response(**response_fields(generations, llm_output))
    if capturing:
        invocation.capture(output_messages=messages_json([g.message for g in generations]))


class InstrumentedChatModel(BaseChatModel):
    """Put first among the bases of any chat model to record its every request::

    class InstrumentedChatOpenAI(InstrumentedChatModel, ChatOpenAI): ...
    """

    telemetry: Any = Field(default=None, exclude=True)
    """The ``Telemetry`` to record into (default: the process's)."""
    provider_name: str = Field(default="openai", exclude=True)
    retry_policy: Any = Field(default=None, exclude=True)
    """A ``RetryPolicy``: every attempt is ours and visible (set the client's own
    ``max_retries=0``). None: one attempt."""

    def _telemetry(self) -> Telemetry:
        telemetry: Telemetry = self.telemetry or get_telemetry()
        return telemetry

    def _request_model(self) -> str:
        return str(getattr(self, "model_name", None) or getattr(self, "model", "") or "unknown")

    def _start(self, messages: list[BaseMessage], *, stream: bool) -> LlmCallInvocation:
        return start_llm_call(
            self._telemetry(), self._request_model(), self.provider_name, messages, stream=stream
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        invocation = self._start(messages, stream=False)
        generate = super()._agenerate
        with invocation:
            if self.retry_policy is None:
                result = await generate(messages, stop, run_manager, **kwargs)
            else:
                result = await Retrier(self.retry_policy, self._telemetry()).call(
                    OP_CHAT, lambda: generate(messages, stop, run_manager, **kwargs)
                )
            record_result(
                invocation, result.generations, result.llm_output, self._telemetry().capturing
            )
        return result

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        invocation = self._start(messages, stream=True)
        on_chunk = invocation.on_chunk

        def observe_chunk(chunk: ChatGenerationChunk) -> None:
            message = chunk.message
            if message.content or getattr(message, "tool_call_chunks", None):
                on_chunk()
            usage = getattr(message, "usage_metadata", None)
            info = chunk.generation_info
            if usage or (info and info.get("finish_reason")):
                invocation.set_response(**response_fields([chunk], None))

        opener = super()._astream
        stream: AsyncIterator[ChatGenerationChunk]
        if self.retry_policy is None:
            stream = opener(messages, stop, run_manager, **kwargs)
        else:
            retrier = Retrier(self.retry_policy, self._telemetry())
            stream = _retried_until_first_chunk(
                retrier, lambda: opener(messages, stop, run_manager, **kwargs)
            )
        # Current until the first chunk (connecting, retrying); not for each chunk after.
        # Closed early (the consumer stopped reading): the request did not complete, so
        # the span ends then and there as cancelled, not at garbage collection as a success.
        chunks = instrument_stream(
            invocation,
            stream,
            observe_chunk,
            closed_early=OUTCOME_CANCELLED,
            current_throughout=False,
        )
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk


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
