"""Retries with exponential backoff and full jitter, every attempt visible.

Strategies come from the ``backoff`` package (``backoff.expo``, ``backoff.full_jitter``);
the loop is ours so that sleep, clock and jitter are injectable (tests never sleep) and
so that each attempt can be recorded where it happens:

- only transient errors are retried: HTTP 408/409/429 and 5xx, connection errors and
  timeouts. Never 400/401/403/404/422, and never a bug in our code;
- a ``Retry-After`` (or ``retry-after-ms``) from the server sets the wait, capped;
- ``max_tries`` attempts at most, and no wait that would end past ``max_time``;
- every attempt counts in ``agentwatch_retry_attempts_total{operation,outcome}`` and
  every wait in ``agentwatch_retry_backoff_seconds``. Once a call needs a second
  attempt, each attempt is a ``retry_attempt {operation}`` span (the first one recorded
  after the fact, with its real start), with its number, the wait before it, its error;
  a call that succeeds at once costs no extra span;
- giving up re-raises the last error unchanged, with a note of the attempts made.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar, cast

import aiohttp
import backoff
import openai

from agentwatch.telemetry import (
    ConfigurationError,
    RetryAttemptInvocation,
    Telemetry,
    is_cancellation,
)
from agentwatch.telemetry.names import RETRY_GIVEUP, RETRY_RETRY, RETRY_SUCCESS

T = TypeVar("T")

AGENTWATCH_RETRY_MAX_TRIES: Final = "AGENTWATCH_RETRY_MAX_TRIES"
AGENTWATCH_RETRY_MAX_TIME: Final = "AGENTWATCH_RETRY_MAX_TIME"

_TRANSIENT_STATUS: Final = frozenset({408, 409, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_tries: int = 4
    max_time: float = 60.0
    base_delay: float = 0.5
    max_delay: float = 20.0
    retry_after_cap: float = 30.0

    def __post_init__(self) -> None:
        if self.max_tries < 1:
            raise ConfigurationError(f"{AGENTWATCH_RETRY_MAX_TRIES} must be at least 1")
        if not self.max_time > 0:
            raise ConfigurationError(f"{AGENTWATCH_RETRY_MAX_TIME} must be positive")
        if not 0 < self.base_delay <= self.max_delay:
            raise ConfigurationError("retry delays must satisfy 0 < base_delay <= max_delay")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetryPolicy:
        e = os.environ if env is None else env
        tries, max_time = (
            e.get(AGENTWATCH_RETRY_MAX_TRIES, ""),
            e.get(AGENTWATCH_RETRY_MAX_TIME, ""),
        )
        default = cls()
        try:
            return cls(
                max_tries=int(tries) if tries.strip() else default.max_tries,
                max_time=float(max_time) if max_time.strip() else default.max_time,
            )
        except ValueError:
            raise ConfigurationError(
                f"{AGENTWATCH_RETRY_MAX_TRIES} takes a whole number and "
                f"{AGENTWATCH_RETRY_MAX_TIME} a number of seconds"
            ) from None


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: rate limits, server errors, lost connections, timeouts."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _TRANSIENT_STATUS or exc.status_code >= 500
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    return isinstance(exc, TimeoutError | ConnectionError | aiohttp.ClientConnectionError)


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After / retry-after-ms), if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Retrier:
    """Runs one call under a ``RetryPolicy``, recording every attempt."""

    def __init__(
        self,
        policy: RetryPolicy,
        telemetry: Telemetry,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[float], float] = backoff.full_jitter,
    ) -> None:
        self.policy = policy
        self.telemetry = telemetry
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter

    def _wait(self, exc: BaseException, delays: Iterator[float]) -> float:
        asked = retry_after(exc)
        if asked is not None:
            return min(asked, self.policy.retry_after_cap)
        return self._jitter(next(delays))

    def _delays(self) -> Iterator[float]:
        """The exponential schedule; built only once a call has failed."""
        policy = self.policy
        delays = backoff.expo(factor=policy.base_delay, max_value=policy.max_delay)
        next(delays)  # advance past the generator's priming yield
        return cast(Iterator[float], delays)

    async def call(self, operation: str, attempt: Callable[[], Awaitable[T]]) -> T:
        policy, telemetry = self.policy, self.telemetry
        delays: Iterator[float] | None = None
        start = self._clock()
        number, wait_before = 0, 0.0
        while True:
            number += 1
            started_at, start_ns = telemetry.clock(), time.time_ns()
            span: RetryAttemptInvocation | None = None
            if number > 1:
                span = telemetry.retry_attempt(operation, number, wait_before)
                span.activate()
            try:
                result = await attempt()
            except BaseException as exc:
                if span is not None:
                    span.deactivate()
                if is_cancellation(exc) or not isinstance(exc, Exception):
                    if span is not None:
                        span.end(exc)
                    raise
                elapsed = self._clock() - start
                wait = None
                if is_transient(exc):
                    delays = delays or self._delays()
                    wait = self._wait(exc, delays)
                give_up = (
                    wait is None or number >= policy.max_tries or elapsed + wait > policy.max_time
                )
                if span is None and not give_up:  # the first attempt, seen to matter now
                    span = telemetry.retry_attempt(
                        operation, 1, 0.0, start_time_ns=start_ns, started_at=started_at
                    )
                if span is not None:
                    span.set_outcome(RETRY_GIVEUP if give_up else RETRY_RETRY)
                    span.fail(exc)
                if give_up or wait is None:
                    telemetry.count_retry(operation, RETRY_GIVEUP)
                    if number > 1:
                        exc.add_note(
                            f"agentwatch: gave up after {number} attempts in {elapsed:.2f} s"
                        )
                    raise
                telemetry.count_retry(operation, RETRY_RETRY, wait)
                await self._sleep(wait)
                wait_before = wait
                continue
            if span is not None:
                span.deactivate()
                span.set_outcome(RETRY_SUCCESS)
                span.stop()
            telemetry.count_retry(operation, RETRY_SUCCESS)
            return result
