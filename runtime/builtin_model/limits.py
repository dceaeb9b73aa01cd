"""The builtin model's own rate limits, enforced as a provider enforces them, so that
tests and demos meet real ``x-ratelimit-*`` headers and real 429s.

Requests and tokens per minute (``ModelBehavior.rate_limit_rpm`` / ``_tpm``): each a
token bucket refilled at its rate per minute and holding ``rate_limit_burst`` seconds of
it (default 60: a whole minute, as the headers report it). A request costs one request
and the tokens of its answer (prompt and completion: the brain knows both before it
answers). Every answer carries OpenAI's headers; a request past either bucket gets 429
with ``Retry-After`` (whole seconds), ``retry-after-ms`` and the same headers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ..rate_limiter import REQUESTS, TOKENS, TokenBucket


class ServedLimits:
    """The buckets of one model server (None: that kind is not limited)."""

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        burst: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        now = clock()
        self._buckets: dict[str, tuple[int, TokenBucket]] = {
            kind: (limit, TokenBucket(limit / 60, max(1.0, limit / 60 * burst), now))
            for kind, limit in ((REQUESTS, rpm), (TOKENS, tpm))
            if limit is not None
        }

    def admit(self, tokens: int) -> tuple[bool, dict[str, str]]:
        """Take one request of ``tokens`` tokens if both buckets have them: whether it
        was admitted, and the headers to answer with."""
        now = self._clock()
        costs = {REQUESTS: 1.0, TOKENS: float(tokens)}
        wait = max(
            (b.time_to(min(costs[k], b.capacity), now) for k, (_, b) in self._buckets.items()),
            default=0.0,
        )
        if wait <= 0:
            for kind, (_, bucket) in self._buckets.items():
                bucket.tokens -= costs[kind]
        headers = {}
        for kind, (limit, bucket) in self._buckets.items():
            level = bucket.level(now)
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(level)))
            headers[f"x-ratelimit-reset-{kind}"] = duration((bucket.capacity - level) / bucket.rate)
        if wait > 0:
            headers["Retry-After"] = str(max(1, math.ceil(wait)))
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        return wait <= 0, headers


def duration(seconds: float) -> str:
    """OpenAI's way: ``"20ms"``, ``"1.5s"``, ``"6m0s"``."""
    if seconds < 1:
        return f"{math.ceil(round(seconds * 1000, 6))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{text}s" if minutes else f"{text}s"
