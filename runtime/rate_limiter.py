"""The client-side rate limiter: a token bucket per model for requests and one for tokens,
so that a batch slows down before the provider refuses it.

A call reserves one request and its estimated tokens at once and waits until both
buckets allow it; the bucket may go into debt, which later callers wait out, first come
first served. Each bucket holds at most one second of its rate (a burst of ``RPM / 60``),
as providers enforce a minute's limit over shorter periods too. After the call its
tokens are corrected from the usage the provider reports, and what the provider's
headers say is learned:

- ``x-ratelimit-limit-requests`` / ``-tokens``: the provider's own limit per minute; the
  bucket runs at the lower of it and the configured one;
- ``x-ratelimit-remaining-requests`` / ``-tokens``: the bucket holds no more than that;
  at 0 with no limit known, nothing is sent before ``x-ratelimit-reset-*``;
- ``Retry-After`` / ``retry-after-ms`` (with a 429): nothing is sent before it passes.

The buckets live behind ``BucketStore`` (``InProcessBuckets`` here), three operations on
a bucket by key, so that several processes can share one budget (Redis, later).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from agentwatch.telemetry import Telemetry

from .provider_errors import retry_after_seconds
from .rate_limits import RateLimits

REQUESTS: Final = "requests"
TOKENS: Final = "tokens"
BURST_SECONDS: Final = 1.0  # a bucket holds this much of its rate


@dataclass(frozen=True, slots=True)
class Learned:
    """What a provider's answer said about one bucket (None: it did not say)."""

    limit_per_minute: float | None = None
    remaining: float | None = None
    reset: float | None = None  # seconds until the provider's budget is full again
    retry_after: float | None = None  # seconds before anything may be sent


class BucketStore(Protocol):
    """Token buckets by key. ``rate`` (per second) is the configured one; the store keeps
    what was learned and runs each bucket at the lower of the two. ``now``: the caller's
    monotonic clock (a shared store keeps its own)."""

    async def reserve(self, key: str, amount: float, rate: float, now: float) -> float:
        """Take ``amount`` (into debt if need be); the seconds to wait before using it."""
        ...

    async def give_back(self, key: str, amount: float, rate: float, now: float) -> None:
        """Return ``amount`` (negative: take more), e.g. an estimate corrected by usage."""
        ...

    async def learn(self, key: str, learned: Learned, rate: float, now: float) -> float:
        """What the provider said about this bucket; the rate (per second) it runs at now."""
        ...


class TokenBucket:
    """``tokens`` refilled at ``rate`` per second up to ``capacity`` (may be in debt)."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def level(self, now: float) -> float:
        """The tokens at ``now`` (refilled since the last look)."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + self.rate * elapsed)
        self.updated = now
        return self.tokens

    def time_to(self, amount: float, now: float) -> float:
        """Seconds until the bucket holds ``amount`` (0: it does)."""
        return max(0.0, (amount - self.level(now)) / self.rate)


class _Bucket(TokenBucket):
    __slots__ = ("configured", "learned_rate", "not_before")

    def __init__(self, rate: float, now: float) -> None:
        super().__init__(rate, capacity_of(rate), now)
        self.configured = rate
        self.learned_rate: float | None = None
        self.not_before = 0.0

    def run_at(self, configured: float, now: float) -> None:
        """Refilled to ``now`` at the old rate, then at the lower of configured and learned."""
        self.level(now)
        rate = configured if self.learned_rate is None else min(configured, self.learned_rate)
        self.configured, self.rate, self.capacity = configured, rate, capacity_of(rate)
        self.tokens = min(self.tokens, self.capacity)


class InProcessBuckets:
    """The buckets of this process (a dict; every operation is synchronous, so atomic on
    the event loop)."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, key: str, rate: float, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(rate, now)
        bucket.run_at(rate, now)
        return bucket

    async def reserve(self, key: str, amount: float, rate: float, now: float) -> float:
        bucket = self._bucket(key, rate, now)
        need = min(amount, bucket.capacity)  # a call larger than the bucket waits for a full one
        wait = max(bucket.time_to(need, now), bucket.not_before - now)
        bucket.tokens -= amount
        return wait

    async def give_back(self, key: str, amount: float, rate: float, now: float) -> None:
        bucket = self._bucket(key, rate, now)
        bucket.tokens = min(bucket.capacity, bucket.tokens + amount)

    async def learn(self, key: str, learned: Learned, rate: float, now: float) -> float:
        bucket = self._bucket(key, rate, now)
        if learned.limit_per_minute is not None and learned.limit_per_minute > 0:
            bucket.learned_rate = learned.limit_per_minute / 60
            bucket.run_at(rate, now)
        if learned.remaining is not None:
            bucket.tokens = min(bucket.tokens, learned.remaining)
            if learned.remaining <= 0 and bucket.learned_rate is None and learned.reset:
                bucket.not_before = max(bucket.not_before, now + learned.reset)
        if learned.retry_after is not None:
            bucket.not_before = max(bucket.not_before, now + learned.retry_after)
        return bucket.rate


def capacity_of(rate: float) -> float:
    """What a bucket running at ``rate`` per second holds: one second of it, at least 1."""
    return max(1.0, rate * BURST_SECONDS)


class Permit:
    """One call let through: ``settle`` it with what the provider answered."""

    __slots__ = ("_limiter", "model", "tokens", "waited")

    def __init__(self, limiter: RateLimiter, model: str, tokens: int, waited: float) -> None:
        self._limiter = limiter
        self.model = model
        self.tokens = tokens  # the estimate reserved
        self.waited = waited

    async def settle(
        self,
        *,
        used_tokens: int | None = None,
        headers: Mapping[str, str] | None = None,
        sent: bool = True,
    ) -> None:
        """``used_tokens``: the call's usage (None: unknown, the estimate stands unless
        ``sent`` is False: a refused call used none); ``headers``: the provider's."""
        await self._limiter.settle(self, used_tokens, headers, sent)


class RateLimiter:
    """``await limiter.acquire(model, estimated_tokens)`` before each request to a model;
    ``await permit.settle(...)`` after it."""

    def __init__(
        self,
        limits: RateLimits,
        telemetry: Telemetry,
        *,
        store: BucketStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.limits = limits
        self.telemetry = telemetry
        self.store: BucketStore = store or InProcessBuckets()
        self._clock = clock
        self._sleep = sleep
        self._shown: set[str] = set()  # buckets whose rate is on the gauge

    def limits_model(self, model: str) -> bool:
        return self.limits.rpm.of(model) is not None or self.limits.tpm.of(model) is not None

    def _buckets(self, model: str, tokens: int) -> list[tuple[str, float, float]]:
        """(key, amount, rate per second) of each bucket ``model`` has."""
        buckets = []
        rpm, tpm = self.limits.rpm.of(model), self.limits.tpm.of(model)
        if rpm is not None:
            buckets.append((f"{model}\n{REQUESTS}", 1.0, rpm / 60))
        if tpm is not None:
            buckets.append((f"{model}\n{TOKENS}", float(tokens), tpm / 60))
        return buckets

    async def acquire(self, model: str, tokens: int) -> Permit:
        """Wait until ``model`` may take one more request of about ``tokens`` tokens. The
        wait is recorded (``agentwatch_rate_limit_wait_seconds``, and on the current
        span); a caller cancelled while waiting gives its reservation back."""
        now = self._clock()
        reserved: list[tuple[str, float, float]] = []
        wait = 0.0
        try:
            for key, amount, rate in self._buckets(model, tokens):
                if key not in self._shown:  # the configured rate, until one is learned
                    self._shown.add(key)
                    self._show(key, rate)
                wait = max(wait, await self.store.reserve(key, amount, rate, now))
                reserved.append((key, amount, rate))
            if wait > 0:
                await self._sleep(wait)
        except BaseException:
            for key, amount, rate in reserved:
                await self.store.give_back(key, amount, rate, self._clock())
            raise
        self.telemetry.rate_limits.waited(model, wait)
        return Permit(self, model, tokens, wait)

    async def settle(
        self,
        permit: Permit,
        used_tokens: int | None,
        headers: Mapping[str, str] | None,
        sent: bool,
    ) -> None:
        now = self._clock()
        learned = learned_from(headers or {})
        for key, amount, rate in self._buckets(permit.model, permit.tokens):
            kind = key.rpartition("\n")[2]
            if kind == TOKENS and (used_tokens is not None or not sent):
                await self.store.give_back(key, amount - (used_tokens or 0), rate, now)
            if learned.get(kind):
                self._show(key, await self.store.learn(key, learned[kind], rate, now))

    def _show(self, key: str, rate: float) -> None:
        """``agentwatch_rate_limit_per_minute`` of the bucket ``key`` (model, kind)."""
        model, _, kind = key.rpartition("\n")
        self.telemetry.rate_limits.limit(model, kind, rate * 60)


# --- the provider's headers ------------------------------------------------------------

_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str) -> float | None:
    """Seconds from ``"20"``, ``"1.5"``, ``"6m0s"``, ``"120ms"``, ``"1h2m3.5s"`` (None:
    not a duration)."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            return None
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        seconds = sum(float(n) * scale[u] for n, u in parts)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _number(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def learned_from(headers: Mapping[str, str]) -> dict[str, Learned]:
    """What OpenAI-style rate limit headers say, per bucket kind (none: empty)."""
    lower = {k.lower(): v for k, v in headers.items()}
    retry_after = retry_after_seconds(lower)
    learned = {}
    for kind in (REQUESTS, TOKENS):
        reset_raw = lower.get(f"x-ratelimit-reset-{kind}")
        found = Learned(
            limit_per_minute=_number(lower, f"x-ratelimit-limit-{kind}"),
            remaining=_number(lower, f"x-ratelimit-remaining-{kind}"),
            reset=parse_duration(reset_raw) if reset_raw is not None else None,
            retry_after=retry_after,
        )
        if found != Learned():
            learned[kind] = found
    return learned
