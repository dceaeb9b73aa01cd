"""One chat model call, one ``chat {model}`` span: the boundaries where it is recorded.

``ChatBoundary``'s methods are wrapt-style wrappers ``(wrapped, instance, args,
kwargs)``: the instrumentor installs them on ``BaseChatModel``; ``InstrumentedChatModel``
calls the same ones from its overrides. Where, in langchain-core 1.7:

- ``generate`` / ``agenerate`` (``invoke``, ``ainvoke``, ``batch`` and the legacy API
  all go through them): no span, only the marker (``recording.py``) for one run per
  prompt, entered before LangChain fires ``on_chat_model_start``.
- ``_generate_with_cache`` / ``_agenerate_with_cache``: the span, one per prompt.
  Beneath it LangChain runs ``_generate`` / ``_agenerate`` or, when the call streams
  (a streaming callback attached, as LangGraph's ``stream_mode="messages"`` does, or
  ``streaming=True``), ``_stream`` / ``_astream``, and announces each chunk on the
  run (``on_llm_new_token``), which is where chunks are timed.
- ``stream`` / ``astream``: the span of a streamed call, each chunk timed as it is
  yielded. A model that cannot stream falls back to ``invoke`` (recorded above).

Not ``_generate`` / ``_agenerate`` / ``_stream`` / ``_astream``: every provider
overrides them (a wrapper on ``BaseChatModel``'s sees none of their calls) and they call
each other (``_agenerate`` defaults to ``_generate`` in a thread; a model streaming
internally calls ``_stream`` from ``_generate``), which would be two spans for one call.
``with_structured_output`` and ``bind_tools`` are runnables around the same model: their
calls cross the same boundaries once.

``start_llm_call`` and ``record_result`` (with ``response_fields``, which reads a
LangChain result once) record a call for these boundaries and for the callback handler.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, GenerationChunk
from opentelemetry.context import Context

from agentwatch.telemetry import (
    LlmCallInvocation,
    Telemetry,
    get_telemetry,
    instrument_iter,
    instrument_stream,
)
from agentwatch.telemetry.names import OP_CHAT, OUTCOME_CANCELLED

from ..budget import check_budget
from .providers import provider_name
from .recording import (
    Recorded,
    Recording,
    call_callbacks,
    current,
    enter,
    leave,
    parent_context,
    runnable_config,
    within,
)
from .streams import marked_aiter, marked_iter, opened

Wrapped = Callable[..., Any]


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
            fields.update(usage_fields(usage))
        metadata = message.response_metadata or {}
        model = metadata.get("model_name") or (llm_output or {}).get("model_name")
        if model:
            fields["response_model"] = str(model)
        response_id = metadata.get("id") or message.id
        if response_id:
            fields["response_id"] = str(response_id)
    return fields


def usage_fields(usage: Mapping[str, Any]) -> dict[str, int]:
    """``set_response`` token counts from LangChain's ``usage_metadata``: input and output
    tokens, and their details (cache read and write, reasoning) when given. A count that
    is not a whole number >= 0 (a proxy's -1) counts as 0."""
    fields = {
        "input_tokens": _count(usage.get("input_tokens")),
        "output_tokens": _count(usage.get("output_tokens")),
    }
    details = usage.get("input_token_details")
    if details:
        fields["cache_read_tokens"] = _count(details.get("cache_read"))
        # langchain-anthropic puts cache writes by lifetime (5 minutes, 1 hour) beside a
        # cache_creation of 0; genai-prices has one cache-write price for both
        by_lifetime = _count(details.get("ephemeral_5m_input_tokens")) + _count(
            details.get("ephemeral_1h_input_tokens")
        )
        fields["cache_write_tokens"] = max(_count(details.get("cache_creation")), by_lifetime)
    details = usage.get("output_token_details")
    if details:
        fields["reasoning_tokens"] = _count(details.get("reasoning"))
    return fields


def _count(value: Any) -> int:
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError, OverflowError):
        return 0


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


_MODEL_FIELDS = ("model_name", "model", "model_id", "deployment_name")
"""Where chat models keep the model they ask for; last, Azure OpenAI's deployment (what
its requests name when no model is given)."""


def request_model(model: BaseChatModel, options: Mapping[str, Any]) -> str:
    """The model a call asks for: a per-call ``model=`` (``bind(model=...)``), else the
    chat model's own ``model_name`` / ``model`` / ``model_id`` / ``deployment_name``."""
    value = options.get("model")
    if isinstance(value, str) and value:
        return value
    for name in _MODEL_FIELDS:  # one at a time: a missing one costs an AttributeError
        value = getattr(model, name, None)
        if isinstance(value, str) and value:
            return value
    return ""  # unknown: the span is `chat`, with no gen_ai.request.model


class ChunkObserver:
    """Each chunk of a streamed call: timing, usage and finish reason (and, when content
    capture is on, the whole answer for the span). Usage that comes in parts adds up, as
    LangChain adds chunks (``AIMessageChunk.__add__``): the call is given the running sum."""

    __slots__ = ("_answer", "_capturing", "_invocation", "_usage")

    def __init__(self, invocation: LlmCallInvocation, capturing: bool) -> None:
        self._invocation = invocation
        self._capturing = capturing
        self._answer: Any = None
        self._usage: UsageMetadata | None = None

    def __call__(self, item: ChatGenerationChunk | GenerationChunk | BaseMessage) -> None:
        if isinstance(item, ChatGenerationChunk):
            message: BaseMessage = item.message
            info = item.generation_info
        elif isinstance(item, BaseMessage):
            message, info = item, item.response_metadata
        else:  # a text model's chunk: timing only
            self._invocation.on_chunk()
            return
        if message.content or getattr(message, "tool_call_chunks", None):
            self._invocation.on_chunk()
        usage = getattr(message, "usage_metadata", None)
        if usage:
            self._usage = add_usage(self._usage, usage)
        if usage or (info and info.get("finish_reason")):
            generation = ChatGeneration(message=message, generation_info=dict(info or {}))
            fields = response_fields([generation], None)
            if self._usage:
                fields.update(usage_fields(self._usage))
            self._invocation.set_response(**fields)
        if self._capturing and isinstance(message, AIMessageChunk):
            self._answer = message if self._answer is None else self._answer + message

    def capture_answer(self) -> None:
        if self._answer is not None:
            self._invocation.capture(output_messages=messages_json([self._answer]))


class _ObservedRun(CallbackManagerForLLMRun):
    """The run's manager, handed down with each announced chunk also observed."""

    _observe: ChunkObserver

    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        **kwargs: Any,
    ) -> None:
        if chunk is not None:
            self._observe(chunk)
        super().on_llm_new_token(token, chunk=chunk, **kwargs)


class _ObservedAsyncRun(AsyncCallbackManagerForLLMRun):
    _observe: ChunkObserver

    async def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        **kwargs: Any,
    ) -> None:
        if chunk is not None:
            self._observe(chunk)
        await super().on_llm_new_token(token, chunk=chunk, **kwargs)


def _observed(run_manager: Any, observe: ChunkObserver) -> Any:
    """A copy of LangChain's own run manager that also observes each chunk (any other
    run manager is left as it is)."""
    kinds: dict[type, type[_ObservedRun] | type[_ObservedAsyncRun]] = {
        CallbackManagerForLLMRun: _ObservedRun,
        AsyncCallbackManagerForLLMRun: _ObservedAsyncRun,
    }
    observed = kinds.get(type(run_manager))
    if observed is None:
        return run_manager
    clone = object.__new__(observed)
    clone.__dict__.update(run_manager.__dict__)
    clone._observe = observe
    return clone


def _call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, Any, dict[str, Any]]:
    """``(messages, stop, run_manager, options)`` of a ``_generate_with_cache`` call."""
    options = dict(kwargs)
    messages = args[0] if args else options.pop("messages")
    stop = args[1] if len(args) > 1 else options.pop("stop", None)
    run_manager = args[2] if len(args) > 2 else options.pop("run_manager", None)
    return messages, stop, run_manager, options


def _stream_options(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The model options of a ``stream(input, config, *, stop, **options)`` call."""
    return {k: v for k, v in kwargs.items() if k not in ("input", "config", "stop")}


class ChatBoundary:
    """The chat model's recorded boundaries, recording into ``telemetry`` (None: the
    process's, looked up at each call) with ``provider`` (None: the model's own, from
    its LangChain metadata)."""

    __slots__ = ("_provider", "_telemetry")

    def __init__(self, telemetry: Telemetry | None = None, provider: str | None = None) -> None:
        self._telemetry = telemetry
        self._provider = provider

    def _start(
        self,
        telemetry: Telemetry,
        model: BaseChatModel,
        messages: Sequence[BaseMessage],
        options: Mapping[str, Any],
        *,
        stream: bool,
        runs: int,
        callbacks: object,
    ) -> tuple[LlmCallInvocation, Recording]:
        """The call's invocation and its marker (``runs``: 1 when LangChain fires the
        call's ``on_chat_model_start`` inside the boundary, 0 when it has already;
        ``callbacks``: the call's, where a handler may trace its parent run)."""
        requested = request_model(model, options)
        enclosing = current()
        if enclosing is not None and enclosing.on_chat_model is not None:
            enclosing.on_chat_model(requested)  # an agent that did not know its model
        parent = parent_context(callbacks)
        check_budget(parent)  # a run that spent its budget makes no more calls
        invocation = start_llm_call(
            telemetry,
            requested,
            self._provider or provider_name(model),
            messages,
            stream=stream,
            parent=parent,
        )
        return invocation, Recording(OP_CHAT, runs, span=invocation.span, owner=model)

    # -- generate / agenerate: the marker, before on_chat_model_start ----------------
    def generate(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        marker = self._marker(instance, args, kwargs)
        if marker is None:
            return wrapped(*args, **kwargs)
        token = enter(marker)
        try:
            return wrapped(*args, **kwargs)
        finally:
            leave(token)

    async def agenerate(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        marker = self._marker(instance, args, kwargs)
        if marker is None:
            return await wrapped(*args, **kwargs)
        token = enter(marker)
        try:
            return await wrapped(*args, **kwargs)
        finally:
            leave(token)

    @staticmethod
    def _marker(
        instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Recording | None:
        marker = current()
        if marker is not None and marker.owner is instance:
            return None  # this model's outer boundary marked the call already
        prompts = args[0] if args else kwargs.get("messages", ())
        return Recording(OP_CHAT, runs=len(prompts), owner=instance)

    # -- _generate_with_cache / _agenerate_with_cache: one span per prompt -------------
    def generate_with_cache(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ChatResult:
        if within(instance):
            result: ChatResult = wrapped(*args, **kwargs)
            return result
        capturing, invocation, marker, call = self._prompt_call(instance, args, kwargs, False)
        with Recorded(invocation, marker):
            result = wrapped(**call)
            record_result(invocation, result.generations, result.llm_output, capturing)
        return result

    async def agenerate_with_cache(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ChatResult:
        if within(instance):
            result: ChatResult = await wrapped(*args, **kwargs)
            return result
        capturing, invocation, marker, call = self._prompt_call(instance, args, kwargs, True)
        with Recorded(invocation, marker):
            result = await wrapped(**call)
            record_result(invocation, result.generations, result.llm_output, capturing)
        return result

    def _prompt_call(
        self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], async_api: bool
    ) -> tuple[bool, LlmCallInvocation, Recording, dict[str, Any]]:
        """A prompt's call: whether content is captured, its invocation and marker, and
        the arguments to call on with (a streamed call's run manager observes chunks)."""
        messages, stop, run_manager, options = _call(args, kwargs)
        stream = instance._should_stream(async_api=async_api, run_manager=run_manager, **options)
        telemetry = self._telemetry or get_telemetry()
        invocation, marker = self._start(
            telemetry, instance, messages, options, stream=stream, runs=0, callbacks=run_manager
        )
        if stream and run_manager is not None:
            run_manager = _observed(run_manager, ChunkObserver(invocation, False))
        call = {"messages": messages, "stop": stop, "run_manager": run_manager, **options}
        return telemetry.capturing, invocation, marker, call

    # -- stream / astream: the span of a streamed call --------------------------------
    def stream(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Iterator[Any]:
        if within(instance) or not _streams(instance, False, kwargs):
            stream: Iterator[Any] = wrapped(*args, **kwargs)  # not streaming: invoke records
            return stream
        return self._stream(wrapped, instance, args, kwargs)

    def _stream(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Iterator[Any]:
        telemetry = self._telemetry or get_telemetry()
        invocation, marker = self._stream_start(telemetry, instance, args, kwargs)
        observe = ChunkObserver(invocation, telemetry.capturing)
        yield from instrument_iter(
            invocation,
            marked_iter(
                opened(marker, lambda: wrapped(*args, **kwargs)), marker, observe.capture_answer
            ),
            observe,
            closed_early=OUTCOME_CANCELLED,
            current_throughout=False,
        )

    def astream(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        if within(instance) or not _streams(instance, True, kwargs):
            stream: AsyncIterator[Any] = wrapped(*args, **kwargs)  # not streaming: invoke records
            return stream
        return self._astream(wrapped, instance, args, kwargs)

    async def _astream(
        self, wrapped: Wrapped, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        telemetry = self._telemetry or get_telemetry()
        invocation, marker = self._stream_start(telemetry, instance, args, kwargs)
        observe = ChunkObserver(invocation, telemetry.capturing)
        # Current until the first chunk (connecting, retrying), not for each chunk after.
        # Closed early (the consumer stopped reading): the request did not complete, so
        # the span ends then and there as cancelled, not at garbage collection as a success.
        chunks = instrument_stream(
            invocation,
            marked_aiter(
                opened(marker, lambda: wrapped(*args, **kwargs)), marker, observe.capture_answer
            ),
            observe,
            closed_early=OUTCOME_CANCELLED,
            current_throughout=False,
        )
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    def _stream_start(
        self, telemetry: Telemetry, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[LlmCallInvocation, Recording]:
        messages: list[BaseMessage] = []
        if telemetry.capturing:
            given = args[0] if args else kwargs.get("input")
            messages = instance._convert_input(given).to_messages()
        options = _stream_options(kwargs)
        callbacks = call_callbacks(runnable_config(args, kwargs))
        return self._start(
            telemetry, instance, messages, options, stream=True, runs=1, callbacks=callbacks
        )


def _streams(model: BaseChatModel, async_api: bool, kwargs: Mapping[str, Any]) -> bool:
    """Whether ``stream()`` / ``astream()`` streams (else it falls back to invoke), as
    LangChain decides it."""
    return model._should_stream(async_api=async_api, **{**_stream_options(kwargs), "stream": True})


__all__ = [
    "ChatBoundary",
    "ChunkObserver",
    "messages_json",
    "record_result",
    "request_model",
    "response_fields",
    "start_llm_call",
]
