"""``chat {model}``: one LLM call, with token usage and, for streams, chunk timing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from . import names as n
from ._invocation import Exemplar, Invocation
from ._recorder import Recorder
from ._spend import current_spend

if TYPE_CHECKING:
    from prometheus_client.metrics import Histogram

OPERATION = n.OP_CHAT
MAX_TOKENS = 10**12  # in one call: past it a count is garbage (a proxy's), never billed
FIRST_CHUNK_EVENT = "gen_ai.first_chunk"


class LlmCallInvocation(Invocation):
    """A chat call. Its cost is worked out once, when it ends, from the token counts it
    was given (a call that failed after its usage arrived was billed, and counts)."""

    __slots__ = (
        "_chunk_gap",
        "_last_chunk",
        "_model",
        "_provider",
        "_provider_name",
        "_recorder",
        "_request_model",
        "_spend",
        "_unbillable",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
        "input_tokens",
        "output_tokens",
        "response_model",
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
        self._request_model = request_model
        self._provider_name = provider
        self._spend = current_spend(parent)  # the enclosing run's and task's totals
        self._unbillable = False  # a count past MAX_TOKENS arrived: unpriced
        self._last_chunk: float | None = None
        self._chunk_gap: Histogram | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.response_model = ""
        self.cost_usd: float | None = None  # once ended: None when unpriced or unbilled
        self.time_to_first_chunk: float | None = None

    def set_response(
        self,
        *,
        response_model: str | None = None,
        response_id: str | None = None,
        finish_reasons: Sequence[str] = (),
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> None:
        """What the model answered with; token counts are recorded (and priced) when the
        call ends. ``input_tokens`` includes the cached ones, ``output_tokens`` the
        reasoning ones, as the GenAI conventions count them. A negative count (a proxy's)
        counts as 0; one past ``MAX_TOKENS`` as 0 too, and makes the call unpriced."""
        counts = (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
        if any(c is not None and c > MAX_TOKENS for c in (*counts, reasoning_tokens)):
            self._unbillable = True
        input_tokens = _count(input_tokens)
        output_tokens = _count(output_tokens)
        cache_read_tokens = _count(cache_read_tokens)
        cache_write_tokens = _count(cache_write_tokens)
        reasoning_tokens = _count(reasoning_tokens)
        if input_tokens is not None:
            self.input_tokens = input_tokens
        if output_tokens is not None:
            self.output_tokens = output_tokens
        if cache_read_tokens is not None:
            self.cache_read_tokens = cache_read_tokens
        if cache_write_tokens is not None:
            self.cache_write_tokens = cache_write_tokens
        if response_model:
            self.response_model = response_model
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
        if cache_read_tokens:
            attributes[n.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = cache_read_tokens
        if cache_write_tokens:
            attributes[n.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = cache_write_tokens
        if reasoning_tokens:
            attributes[n.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = reasoning_tokens
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
        if self.input_tokens is not None or self.output_tokens is not None:
            self._record_cost(exemplar)

    def _record_cost(self, exemplar: Exemplar) -> None:
        """A billed call (its usage arrived): priced by its provider and response model
        (else its request model), added to the enclosing run's and task's totals."""
        r = self._recorder
        prices = r.prices
        price = None
        if self.response_model:
            price = prices.price(self._provider_name, self.response_model)
        if price is None and self._request_model != self.response_model:
            price = prices.price(self._provider_name, self._request_model)
        cost = None
        if price is not None and not self._unbillable:
            cost = price.cost(
                self.input_tokens or 0,
                self.output_tokens or 0,
                self.cache_read_tokens,
                self.cache_write_tokens,
            )
            if not math.isfinite(cost):  # no figure rather than NaN or infinity
                cost = None
        spend = self._spend
        span = self.span
        if cost is None:
            r.child(r.metrics.unpriced_calls, self._provider, self._model).inc()
            if span.is_recording():
                span.set_attribute(n.AGENTWATCH_USAGE_COST_UNPRICED, True)
        else:
            cost = self.cost_usd = max(cost, 0.0)
            agent = spend.agent if spend is not None else ""
            r.child(r.metrics.cost, self._provider, self._model, agent).inc(cost, exemplar)
            if span.is_recording():
                span.set_attributes(
                    {
                        n.AGENTWATCH_USAGE_COST_AMOUNT: cost,
                        n.AGENTWATCH_USAGE_COST_CURRENCY: n.CURRENCY_USD,
                    }
                )
        if spend is not None:
            spend.add(self.cost_usd)


def _count(tokens: int | None) -> int | None:
    return None if tokens is None else tokens if 0 <= tokens <= MAX_TOKENS else 0
