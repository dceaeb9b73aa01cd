"""The shared core of every operation: one span, one clock, one place that ends both.

Each operation (observe, agent run, LLM call, tool call, batch task, retry attempt)
subclasses ``Invocation`` and says what it records in ``_record``. The rules of
docs/architecture.md live here once: the original exception is re-raised unmodified,
nothing new is raised from telemetry, a cancellation is recorded as cancelled rather
than as a failure, span and metrics end in ``finally``-equivalent paths.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from types import TracebackType
from typing import Self, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from .names import (
    AGENTWATCH_OUTCOME,
    CANCELLED,
    ERROR_TYPE,
    OUTCOME_CANCELLED,
    OUTCOME_ERROR,
    OUTCOME_OK,
)

_logger = logging.getLogger("agentwatch.telemetry")

Exemplar = dict[str, str] | None
Clock = Callable[[], float]


def error_type_of(exc: BaseException) -> str:
    """The ``error.type`` of an exception: its class name (a closed, code-defined set)."""
    return type(exc).__name__


def is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError | GeneratorExit)


_control_flow: tuple[type[BaseException], ...] = ()


def treat_as_control_flow(*kinds: type[BaseException]) -> None:
    """Exceptions of these classes end an operation without failing it: a framework
    that steers with exceptions (LangGraph's ``interrupt()`` and ``Command`` handoffs
    bubble up as ``GraphBubbleUp``) pauses or hands off a run, it does not fail it."""
    global _control_flow
    _control_flow = tuple(dict.fromkeys((*_control_flow, *kinds)))


class Invocation:
    """One running operation. End it with ``stop()``, ``fail(exc)`` or ``end(exc)``."""

    __slots__ = ("_clock", "_ended", "_start", "_token", "span")

    def __init__(
        self,
        tracer: trace.Tracer,
        clock: Clock,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        parent: otel_context.Context | None = None,
        start_time_ns: int | None = None,
        started_at: float | None = None,
    ) -> None:
        """``start_time_ns`` / ``started_at`` (wall ns / ``clock`` value) record an
        operation after the fact, when only its failure made it worth a span."""
        self.span: Span = tracer.start_span(
            name, context=parent, kind=kind, attributes=attributes, start_time=start_time_ns
        )
        self._clock = clock
        self._start = clock() if started_at is None else started_at
        self._ended = False
        self._token: object | None = None

    # -- what subclasses define ------------------------------------------------------
    def _record(self, duration: float, error_type: str, exemplar: Exemplar) -> None:
        """Record this operation's metrics. ``error_type`` is "" when it succeeded."""

    # -- context ---------------------------------------------------------------------
    @property
    def context(self) -> otel_context.Context:
        """A context whose current span is this one, for children started elsewhere."""
        return self._context()

    def _context(self) -> otel_context.Context:
        """What this invocation makes current: its span (and what a subclass adds to it)."""
        return trace.set_span_in_context(self.span)

    def activate(self) -> None:
        """Make this span current until ``deactivate()`` (in the same task)."""
        self._token = otel_context.attach(self._context())

    def deactivate(self) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None

    @property
    def trace_id(self) -> str:
        """The trace id as 32 hex digits ("" when tracing is off)."""
        ctx = self.span.get_span_context()
        return format(ctx.trace_id, "032x") if ctx.is_valid else ""

    def exemplar(self) -> Exemplar:
        ctx = self.span.get_span_context()
        if not ctx.trace_flags.sampled:
            return None
        return {"trace_id": format(ctx.trace_id, "032x")}

    def elapsed(self) -> float:
        return self._clock() - self._start

    # -- ending ----------------------------------------------------------------------
    def stop(self) -> None:
        """End successfully."""
        self._finish("", OUTCOME_OK)

    def fail(self, exc: BaseException) -> None:
        """End as failed by ``exc`` (a cancellation ends as cancelled instead)."""
        if is_cancellation(exc):
            self.cancel()
            return
        if self._ended:
            return
        error_type = error_type_of(exc)
        span = self.span
        if span.is_recording():
            span.set_attribute(ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, f"{error_type}: {exc}"[:1024]))
            span.record_exception(exc, escaped=True)
        self._finish(error_type, OUTCOME_ERROR)

    def cancel(self) -> None:
        """End as cancelled: not a success, not a failure (``error_type="cancelled"``)."""
        self._finish(CANCELLED, OUTCOME_CANCELLED)

    def end(self, exc: BaseException | None) -> None:
        """End by how the operation ended: ``exc`` None (or control flow: see
        ``treat_as_control_flow``) a success, else ``fail(exc)``."""
        if exc is None or isinstance(exc, _control_flow):
            self.stop()
        else:
            self.fail(exc)

    def _finish(self, error_type: str, outcome: str) -> None:
        if self._ended:
            return
        self._ended = True
        duration = self._clock() - self._start
        try:
            self._record(duration, error_type, self.exemplar())
        except Exception:  # telemetry never changes the caller's control flow
            _logger.exception("agentwatch: recording %s failed", type(self).__name__)
        finally:
            if outcome is not OUTCOME_OK:  # ok is the default: no attribute on the hot path
                self.span.set_attribute(AGENTWATCH_OUTCOME, outcome)
            self.span.end()

    # -- with / async with: the one span lifecycle -----------------------------------
    def __enter__(self) -> Self:
        """Current in this task until the block ends; then ended by how it ended."""
        self.activate()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deactivate()
        self.end(exc)  # returns None: the caller's exception goes on unchanged

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


T = TypeVar("T")


class _StreamSpan:
    """What ``instrument_stream`` and ``instrument_iter`` share: when the span is
    current (around a step of the producer, never across a ``yield``) and how the
    stream's end ends it."""

    __slots__ = ("_closed_early", "_current", "_invocation", "_throughout", "error")

    def __init__(self, invocation: Invocation, closed_early: str, throughout: bool) -> None:
        self._invocation = invocation
        self._closed_early = closed_early
        self._current = True
        self._throughout = throughout
        self.error: BaseException | None = None

    def step(self) -> bool:
        """Before a step: the span made current when it should be (True: it was)."""
        if not self._current:
            return False
        self._invocation.activate()
        self._current = self._throughout
        return True

    def stepped(self, current: bool) -> None:
        if current:
            self._invocation.deactivate()

    def end(self) -> None:
        """End the invocation, with the stream's error if it failed, and let go of that
        error: the stream's frame holds this object and the error's traceback holds that
        frame, a reference cycle that kept a failed run's objects for a full collection
        (agents/frames.py in the runtime)."""
        error, self.error = self.error, None
        self._invocation.end(error)

    def failed(self, exc: BaseException) -> None:
        """The stream ended by ``exc``: a consumer that closed it early (GeneratorExit)
        ends it as finished, or as cancelled with ``closed_early=OUTCOME_CANCELLED``."""
        if not isinstance(exc, GeneratorExit) or self._closed_early == OUTCOME_CANCELLED:
            self.error = exc


async def instrument_stream(
    invocation: Invocation,
    stream: AsyncIterator[T],
    on_item: Callable[[T], None] | None = None,
    *,
    closed_early: str = OUTCOME_OK,
    current_throughout: bool = True,
) -> AsyncGenerator[T, None]:
    """Yield from ``stream`` inside ``invocation``, ending it when the stream ends.

    The span is current while the producer runs and never across a ``yield``. Closing
    the wrapper early (``aclose``) closes the producer and ends the span as finished,
    or as cancelled with ``closed_early=OUTCOME_CANCELLED`` (a run whose consumer went
    away did not complete). With ``current_throughout=False`` the span is current only
    until the first item (connecting, retrying), which saves a context switch per item
    of a long stream whose producer starts no spans of its own after that.
    """
    span = _StreamSpan(invocation, closed_early, current_throughout)
    try:
        while True:
            current = span.step()
            try:
                item = await anext(stream)
            except StopAsyncIteration:
                break
            finally:
                span.stepped(current)
            if on_item is not None:
                on_item(item)
            yield item
    except BaseException as exc:
        span.failed(exc)
        raise
    finally:
        try:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
        finally:
            span.end()


def instrument_iter(
    invocation: Invocation,
    stream: Iterator[T],
    on_item: Callable[[T], None] | None = None,
    *,
    closed_early: str = OUTCOME_OK,
    current_throughout: bool = True,
) -> Generator[T, None, None]:
    """``instrument_stream`` for a sync iterator (LangChain's sync ``stream()``)."""
    span = _StreamSpan(invocation, closed_early, current_throughout)
    try:
        while True:
            current = span.step()
            try:
                item = next(stream)
            except StopIteration:
                break
            finally:
                span.stepped(current)
            if on_item is not None:
                on_item(item)
            yield item
    except BaseException as exc:
        span.failed(exc)
        raise
    finally:
        try:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        finally:
            span.end()
