"""Streams a boundary records: its marker current while the producer runs (the span
is telemetry's: ``instrument_stream`` / ``instrument_iter``).

Neither the span nor the marker is current across a ``yield``: set around each step of
the producer, reset before the item goes to the consumer (whose own code is not part of
the operation).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from typing import TypeVar

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
