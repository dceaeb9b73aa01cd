"""Streams a boundary records: its marker current while the producer runs, and the sync
twin of ``agentwatch.telemetry.instrument_stream`` for LangChain's sync ``stream()``.

Neither the span nor the marker is current across a ``yield``: set around each step of
the producer, reset before the item goes to the consumer (whose own code is not part of
the operation).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from typing import TypeVar

from agentwatch.telemetry import Invocation
from agentwatch.telemetry.names import OUTCOME_CANCELLED, OUTCOME_OK

from .recording import Recording, enter, leave

T = TypeVar("T")


def opened(marker: Recording, open_stream: Callable[[], T]) -> T:
    """``open_stream()`` with ``marker`` current: a boundary of the same object beneath
    (``InstrumentedChatModel.astream`` over the instrumentor's) decides when called."""
    token = enter(marker)
    try:
        return open_stream()
    finally:
        leave(token)


async def marked_aiter(
    stream: AsyncIterator[T], marker: Recording, on_end: Callable[[], None] | None = None
) -> AsyncGenerator[T, None]:
    """``stream`` with ``marker`` current while it produces each item; ``on_end`` once
    it is exhausted (before the span ends)."""
    try:
        while True:
            token = enter(marker)
            try:
                item = await anext(stream)
            except StopAsyncIteration:
                break
            finally:
                leave(token)
            yield item
        if on_end is not None:
            on_end()
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


def marked_iter(
    stream: Iterator[T], marker: Recording, on_end: Callable[[], None] | None = None
) -> Generator[T, None, None]:
    """``marked_aiter`` for a sync iterator."""
    try:
        while True:
            token = enter(marker)
            try:
                item = next(stream)
            except StopIteration:
                break
            finally:
                leave(token)
            yield item
        if on_end is not None:
            on_end()
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def instrument_iter(
    invocation: Invocation,
    stream: Iterator[T],
    on_item: Callable[[T], None] | None = None,
    *,
    closed_early: str = OUTCOME_OK,
    current_throughout: bool = True,
) -> Generator[T, None, None]:
    """``instrument_stream`` for a sync iterator: the same rules (the span current while
    the producer runs, never across a ``yield``; ended when the stream ends, fails or
    is closed — as cancelled with ``closed_early=OUTCOME_CANCELLED``)."""
    error: BaseException | None = None
    current = True
    try:
        while True:
            if current:
                invocation.activate()
                current = current_throughout
                try:
                    item = next(stream)
                except StopIteration:
                    break
                finally:
                    invocation.deactivate()
            else:
                try:
                    item = next(stream)
                except StopIteration:
                    break
            if on_item is not None:
                on_item(item)
            yield item
    except GeneratorExit as exc:
        if closed_early == OUTCOME_CANCELLED:
            error = exc
    except BaseException as exc:
        error = exc
        raise
    finally:
        try:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        finally:
            invocation.end(error)
