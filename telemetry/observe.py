"""``observe()``: time any async code as a span plus a histogram sample with exemplar.

Usable three ways, each recording the same span and metric::

    async with observe("fetch", url=url): ...

    @observe("fetch")
    async def fetch(url): ...

    @observe("pages")
    async def pages():  # the span stays open until the generator finishes or is closed
        yield ...

For an async generator the span is current only while the generator's own code runs,
never across a ``yield`` (the consumer's code is not part of it).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import Any, TypeVar, cast

from opentelemetry.util.types import AttributeValue

from ._invocation import instrument_stream
from .core import OperationInvocation, Telemetry

F = TypeVar("F", bound=Callable[..., Any])


class Observation:
    """The object ``observe()`` returns: a decorator and an async context manager."""

    __slots__ = ("_attributes", "_current", "_operation", "_telemetry")

    def __init__(
        self,
        operation: str,
        attributes: Mapping[str, AttributeValue],
        telemetry: Telemetry | None = None,
    ) -> None:
        if not operation:
            raise ValueError("observe() needs a non-empty operation name")
        self._operation = operation
        self._attributes = attributes
        self._telemetry = telemetry
        self._current: OperationInvocation | None = None

    def _start(self) -> OperationInvocation:
        telemetry = self._telemetry
        if telemetry is None:
            from .setup import get_telemetry

            telemetry = get_telemetry()
        return telemetry.start_operation(self._operation, self._attributes)

    async def __aenter__(self) -> OperationInvocation:
        if self._current is not None:
            raise RuntimeError("this observe() is already entered; call observe() again")
        invocation = self._current = self._start()
        invocation.activate()
        return invocation

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        invocation, self._current = self._current, None
        if invocation is not None:
            invocation.deactivate()
            invocation.end(exc)

    def __call__(self, fn: F) -> F:
        if inspect.isasyncgenfunction(fn):
            return cast(F, self._wrap_generator(fn))
        if inspect.iscoroutinefunction(fn):
            return cast(F, self._wrap_coroutine(fn))
        raise TypeError(
            f"observe() decorates async functions and async generators, not {fn!r}; "
            "for synchronous code use `with telemetry.start_operation(...)`"
        )

    def _wrap_coroutine(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            invocation = self._start()
            invocation.activate()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                invocation.deactivate()
                invocation.end(exc)
                raise
            invocation.deactivate()
            invocation.stop()
            return result

        return wrapper

    def _wrap_generator(self, fn: Callable[..., AsyncGenerator[Any, Any]]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
            # Started on first iteration, not on call: a generator never iterated
            # leaves no span open.
            stream = instrument_stream(self._start(), fn(*args, **kwargs))
            async with aclosing(stream):
                async for item in stream:
                    yield item

        return wrapper


def observe(operation: str, **attributes: AttributeValue) -> Observation:
    """Time ``operation`` with the process's telemetry (``setup_telemetry()``)."""
    return Observation(operation, attributes)
