"""``chat {model}``: one LLM call, with token usage and, for streams, chunk timing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from . import names as n
from ._invocation import Exemplar, Invocation
from ._recorder import Recorder

if TYPE_CHECKING:
    from prometheus_client.metrics import Histogram

OPERATION = n.OP_CHAT
FIRST_CHUNK_EVENT = "gen_ai.first_chunk"


class LlmCallInvocation(Invocation):
    __slots__ = (
        "_chunk_gap",
        "_last_chunk",
        "_model",
        "_provider",
        "_recorder",
        "input_tokens",
        "output_tokens",
        "time_to_first_chunk",
    )

    def __init__(
        self,
        recorder: Recorder,
        request_model: str,
        provider: str,
        *,
        stream: bool = False,
        parent: Context | None = None,
    ) -> None:
        attributes: dict[str, str | bool] = {
            n.GEN_AI_OPERATION_NAME: OPERATION,
            n.GEN_AI_PROVIDER_NAME: provider,
        }
        if request_model:  # semconv: `chat {model}`, or `chat` when the model is unknown
            attributes[n.GEN_AI_REQUEST_MODEL] = request_model
        if stream:
            attributes["gen_ai.request.stream"] = True
        super().__init__(
            recorder.tracer,
            recorder.clock,
            f"{OPERATION} {request_model}" if request_model else OPERATION,
            attributes,
            kind=SpanKind.CLIENT,
            parent=parent,
        )
        self._recorder = recorder
        self._model = recorder.models(request_model)
        self._provider = recorder.providers(provider)
        self._last_chunk: float | None = None
        self._chunk_gap: Histogram | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.time_to_first_chunk: float | None = None

    def set_response(
        self,
        *,
        response_model: str | None = None,
        response_id: str | None = None,
        finish_reasons: Sequence[str] = (),
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """What the model answered with; token counts are recorded when the call ends."""
        if input_tokens is not None:
            self.input_tokens = input_tokens
        if output_tokens is not None:
            self.output_tokens = output_tokens
        span = self.span
        if not span.is_recording():
            return
        attributes: dict[str, AttributeValue] = {}
        if response_model:
            attributes[n.GEN_AI_RESPONSE_MODEL] = response_model
        if response_id:
            attributes[n.GEN_AI_RESPONSE_ID] = response_id
        if finish_reasons:
            attributes[n.GEN_AI_RESPONSE_FINISH_REASONS] = list(finish_reasons)
        if input_tokens is not None:
            attributes[n.GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
        if output_tokens is not None:
            attributes[n.GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens
        span.set_attributes(attributes)  # one lock and one pass, not five

    def capture(
        self, input_messages: str | None = None, output_messages: str | None = None
    ) -> None:
        """Message content (JSON) on the span, only when content capture is opted in."""
        if not self._recorder.capturing or not self.span.is_recording():
            return
        if input_messages is not None:
            self.span.set_attribute(n.GEN_AI_INPUT_MESSAGES, input_messages)
        if output_messages is not None:
            self.span.set_attribute(n.GEN_AI_OUTPUT_MESSAGES, output_messages)

    def on_chunk(self) -> None:
        """A streamed chunk arrived: time to first chunk, then each gap after it."""
        now = self._clock()
        last = self._last_chunk
        self._last_chunk = now
        if last is None:
            ttfc = self.time_to_first_chunk = now - self._start
            r = self._recorder
            r.child(r.metrics.gen_ai_time_to_first_chunk, *self._labels("")).observe(
                ttfc, self.exemplar()
            )
            self._chunk_gap = r.child(r.metrics.gen_ai_time_per_output_chunk, *self._labels(""))
            if self.span.is_recording():
                self.span.set_attribute(n.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, ttfc)
                self.span.add_event(FIRST_CHUNK_EVENT)
            return
        gap = self._chunk_gap
        if gap is not None:
            gap.observe(now - last)

    def _labels(self, error_type: str) -> tuple[str, str, str, str]:
        return (OPERATION, self._provider, self._model, self._recorder.error_label(error_type))

    def _record(self, duration: float, error_type: str, exemplar: Exemplar) -> None:
        r = self._recorder
        r.child(r.metrics.gen_ai_operation_duration, *self._labels(error_type)).observe(
            duration, exemplar
        )
        usage = r.metrics.gen_ai_token_usage
        if self.input_tokens is not None:
            r.child(usage, n.TOKEN_INPUT, OPERATION, self._provider, self._model).observe(
                self.input_tokens, exemplar
            )
        if self.output_tokens is not None:
            r.child(usage, n.TOKEN_OUTPUT, OPERATION, self._provider, self._model).observe(
                self.output_tokens, exemplar
            )
