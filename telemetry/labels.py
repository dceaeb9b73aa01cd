"""Closed label sets: no input can grow the number of series.

A label takes either values from an explicit allowlist, or the first ``limit`` distinct
values it sees (for sets closed by code but not known up front, such as exception class
names). Anything else is recorded as ``_OTHER``, the semantic conventions' fallback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from .names import OTHER

DEFAULT_LIMIT = 64


class BoundedLabel:
    """Maps raw values onto a closed set. Thread-safe; lookups of known values are a dict hit."""

    __slots__ = ("_allowed", "_limit", "_lock", "_seen")

    def __init__(self, allowed: Iterable[str] | None = None, *, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self._allowed = frozenset(allowed) if allowed is not None else None
        self._limit = limit
        self._seen: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        known = self._seen.get(value)
        if known is not None:
            return known
        return self._admit(value)

    def allow(self, values: Iterable[str]) -> None:
        """Widen an allowlist (a tool registered, a model configured)."""
        with self._lock:
            base = self._allowed or frozenset()
            self._allowed = base | frozenset(values)
            self._seen = {k: v for k, v in self._seen.items() if v != OTHER}

    def _admit(self, value: str) -> str:
        with self._lock:
            if self._allowed is not None:
                mapped = value if value in self._allowed else OTHER
                if len(self._seen) < self._limit * 4:
                    self._seen[value] = mapped
                return mapped
            distinct = sum(1 for v in self._seen.values() if v != OTHER)
            mapped = value if distinct < self._limit else OTHER
            if len(self._seen) < self._limit * 4:
                self._seen[value] = mapped
            return mapped
