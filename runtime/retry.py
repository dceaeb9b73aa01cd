"""Retries with exponential backoff and full jitter, every attempt visible.

Strategies come from the ``backoff`` package (``backoff.expo``, ``backoff.full_jitter``);
the loop is ours so that sleep, clock and jitter are injectable (tests never sleep) and
so that each attempt can be recorded where it happens:

- only transient errors are retried, as ``provider_errors.classify`` says (for any
  provider: HTTP 408/409/429 and 5xx, connection errors and timeouts). Never
  400/401/403/404/422, and never a bug in our code;
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
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar, cast

import backoff

from agentwatch.telemetry import ConfigurationError, Telemetry
from agentwatch.telemetry.names import RETRY_FAILED, RETRY_GIVEUP, RETRY_RETRY, RETRY_SUCCESS

from .provider_errors import ProviderFailure, classify
from .provider_errors import is_transient as is_transient
from .provider_errors import retry_after as retry_after

T = TypeVar("T")

AGENTWATCH_RETRY_MAX_TRIES: Final = "AGENTWATCH_RETRY_MAX_TRIES"
AGENTWATCH_RETRY_MAX_TIME: Final = "AGENTWATCH_RETRY_MAX_TIME"


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


class _Schedule:
    """When to try one call again: decided once per failed attempt, remembered in ``wait``."""

    __slots__ = (
        "_classify",
        "_clock",
        "_delays",
        "_jitter",
        "_policy",
        "_start",
        "outcome",
        "wait",
    )

    def __init__(
        self,
        policy: RetryPolicy,
        classify: Callable[[BaseException], ProviderFailure | None],
        clock: Callable[[], float],
        jitter: Callable[[float], float],
    ) -> None:
        self._policy = policy
        self._classify = classify
        self._clock = clock
        self._jitter = jitter
        self._start = clock()
        self._delays: Iterator[float] | None = None  # built only once a call has failed
        self.wait: float | None = None
        self.outcome = RETRY_RETRY  # of the last failed attempt: retry, giveup or failed

    def after(self, exc: Exception, number: int) -> float | None:
        """The wait before attempt ``number + 1`` after ``exc``; None: no more attempts
        (``outcome``: ``giveup`` when a transient error ran out of attempts or time,
        ``failed`` when the error is not worth another attempt)."""
        policy = self._policy
        self.wait = None
        failure = self._classify(exc)
        if failure is None or not failure.transient:
            self.outcome = RETRY_FAILED
            return None
        self.outcome = RETRY_GIVEUP
        if number >= policy.max_tries:
            return None
        if failure.retry_after is not None:
            wait = min(failure.retry_after, policy.retry_after_cap)
        else:
            if self._delays is None:
                delays = backoff.expo(factor=policy.base_delay, max_value=policy.max_delay)
                next(delays)  # advance past the generator's priming yield
                self._delays = cast(Iterator[float], delays)
            wait = self._jitter(next(self._delays))
        if self.elapsed() + wait > policy.max_time:
            return None
        self.outcome = RETRY_RETRY
        self.wait = wait
        return wait

    def elapsed(self) -> float:
        return self._clock() - self._start


class Retrier:
    """Runs one call under a ``RetryPolicy``, recording every attempt.

    Which errors are transient, and how long a server asked us to wait, comes from
    ``classify`` (``runtime/provider_errors.py``; a new provider registers there)."""

    def __init__(
        self,
        policy: RetryPolicy,
        telemetry: Telemetry,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[float], float] = backoff.full_jitter,
        classify: Callable[[BaseException], ProviderFailure | None] = classify,
    ) -> None:
        self.policy = policy
        self.telemetry = telemetry
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter
        self._classify = classify

    async def call(self, operation: str, attempt: Callable[[], Awaitable[T]]) -> T:
        count = self.telemetry.retries.count  # every attempt, the first one too
        schedule = _Schedule(self.policy, self._classify, self._clock, self._jitter)
        number, wait = 1, 0.0
        while True:
            try:
                result = await self._attempt(operation, number, wait, attempt, schedule)
            except Exception as exc:
                if schedule.wait is None:
                    count(operation, schedule.outcome)
                    if number > 1 and schedule.outcome == RETRY_GIVEUP:
                        elapsed = schedule.elapsed()
                        exc.add_note(
                            f"agentwatch: gave up after {number} attempts in {elapsed:.2f} s"
                        )
                    raise
                wait = schedule.wait
                count(operation, RETRY_RETRY, wait)
                await self._sleep(wait)
                number += 1
                continue
            count(operation, RETRY_SUCCESS)
            return result

    async def _attempt(
        self,
        operation: str,
        number: int,
        wait_before: float,
        attempt: Callable[[], Awaitable[T]],
        schedule: _Schedule,
    ) -> T:
        """One attempt; a failure decides the schedule's next wait (None: give up).

        The first attempt has no span while it runs (a call that succeeds at once costs
        none); when a retry follows it, it is recorded after the fact with its real start.
        Every later attempt runs inside its own ``retry_attempt`` span."""
        telemetry = self.telemetry
        if number == 1:
            started_at, start_ns = telemetry.clock(), time.time_ns()
            try:
                return await attempt()
            except Exception as exc:
                if schedule.after(exc, number) is not None:  # the first attempt matters now
                    first = telemetry.retry_attempt(
                        operation, 1, 0.0, start_time_ns=start_ns, started_at=started_at
                    )
                    first.set_outcome(RETRY_RETRY)
                    first.fail(exc)
                raise
        with telemetry.retry_attempt(operation, number, wait_before) as span:
            try:
                result = await attempt()
            except Exception as exc:
                schedule.after(exc, number)
                span.set_outcome(schedule.outcome)
                raise
            span.set_outcome(RETRY_SUCCESS)
            return result
