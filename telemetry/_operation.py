"""``observe()``'s operation: any code timed as a span and an
``agentwatch_operation_duration_seconds`` sample, and ``Observation``, the object that
times it as ``async with`` or as a decorator of async functions and generators.

Every way goes through ``Invocation``'s own ``with`` (or ``instrument_stream`` for a
generator, whose span must not stay current across a ``yield``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import Any, TypeVar, cast

from opentelemetry.util.types import AttributeValue

from ._invocation import Exemplar, Invocation, instrument_stream
from ._recorder import Recorder

F = TypeVar("F", bound=Callable[..., Any])


class OperationInvocation(Invocation):
    """An operation under ``observe()``: records ``agentwatch_operation_duration_seconds``."""

    __slots__ = ("_operation", "_recorder")

    def __init__(
        self,
        recorder: Recorder,
        operation: str,
        attributes: Mapping[str, AttributeValue] | None,
    ) -> None:
        super().__init__(recorder.tracer, recorder.clock, operation, attributes)
        self._recorder = recorder
        self._operation = operation

    def _record(self, duration: float, error_type: str, exemplar: Exemplar) -> None:
        r = self._recorder
        r.child(
            r.metrics.operation_duration, r.operations(self._operation), r.error_label(error_type)
        ).observe(duration, exemplar)


# Starts one operation: ``Telemetry.start_operation``, or the process telemetry's.
Start = Callable[[str, Mapping[str, AttributeValue]], OperationInvocation]


class Observation:
    """The object ``observe()`` returns: a decorator and an async context manager."""

    __slots__ = ("_attributes", "_current", "_operation", "_start")

    def __init__(
        self, operation: str, attributes: Mapping[str, AttributeValue], start: Start
    ) -> None:
        """``start(operation, attributes)`` starts each operation, when it starts (a
        decorator made before ``setup_telemetry()`` records with what setup made)."""
        if not operation:
            raise ValueError("observe() needs a non-empty operation name")
        self._operation = operation
        self._attributes = attributes
        self._start = start
        self._current: OperationInvocation | None = None

    def _begin(self) -> OperationInvocation:
        return self._start(self._operation, self._attributes)

    async def __aenter__(self) -> OperationInvocation:
        if self._current is not None:
            raise RuntimeError("this observe() is already entered; call observe() again")
        self._current = self._begin()
        return self._current.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        invocation, self._current = self._current, None
        if invocation is not None:
            invocation.__exit__(exc_type, exc, tb)

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
            with self._begin():
                return await fn(*args, **kwargs)

        return wrapper

    def _wrap_generator(self, fn: Callable[..., AsyncGenerator[Any, Any]]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
            # Started on first iteration, not on call: a generator never iterated
            # leaves no span open.
            stream = instrument_stream(self._begin(), fn(*args, **kwargs))
            async with aclosing(stream):
                async for item in stream:
                    yield item

        return wrapper
