"""Closed label sets: no input can grow the number of series.

A label maps raw values onto a closed set in one way, whatever the order of calls:

- declared values always pass. Code declares what it registers up front (an agent's
  name, its configured model, its tools); declaring only ever adds, and a declared value
  uses none of the room left for the others;
- any other value is admitted if it is one of the first ``limit`` distinct ones seen
  (for sets closed by code but not known up front: exception class names, the models
  and tools of users' own chains seen through the callback handler);
- the rest are recorded as ``_OTHER``, the semantic conventions' fallback.

``limit=0`` makes a strict allowlist (only declared values pass), fixed when built.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from .names import OTHER

DEFAULT_LIMIT = 64
# Declared values come from code, not input; still, the set stays closed past this many.
MAX_DECLARED = 1024


class BoundedLabel:
    """Maps raw values onto a closed set. Thread-safe; lookups of known values are a dict hit."""

    __slots__ = ("_admitted", "_declared", "_limit", "_lock", "_seen")

    def __init__(self, declared: Iterable[str] | None = None, *, limit: int | None = None) -> None:
        """``declared`` values always pass; ``limit`` more are admitted first come (default
        64, or 0 — a strict allowlist — when ``declared`` is given and ``limit`` is not)."""
        if limit is None:
            limit = 0 if declared is not None else DEFAULT_LIMIT
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        self._limit = limit
        self._declared: set[str] = set()
        self._admitted = 0  # distinct undeclared values admitted so far
        self._seen: dict[str, str] = {}  # raw value -> label, a bounded cache
        self._lock = threading.Lock()
        if declared is not None:
            self.declare(declared)

    def __call__(self, value: str) -> str:
        known = self._seen.get(value)
        if known is not None:
            return known
        return self._admit(value)

    def declare(self, values: Iterable[str]) -> None:
        """Add values that always pass (a tool registered, a model configured). Only adds:
        nothing admitted before is folded away, and other values keep their room."""
        with self._lock:
            for value in values:
                if value in self._declared:
                    continue
                if len(self._declared) >= MAX_DECLARED:
                    break
                self._declared.add(value)
                if self._seen.get(value) == OTHER:
                    del self._seen[value]  # mapped to _OTHER before it was declared
                self._seen.setdefault(value, value)

    def _admit(self, value: str) -> str:
        with self._lock:
            known = self._seen.get(value)  # another thread may have admitted it meanwhile
            if known is not None:
                return known
            if value in self._declared:
                mapped = value
            elif self._admitted < self._limit:
                self._admitted += 1
                mapped = value
            else:
                mapped = OTHER
            # Admitted values are cached for good (a bounded number); _OTHER ones while
            # there is room, so repeated junk stays a dict hit without growing memory.
            if mapped != OTHER or len(self._seen) < len(self._declared) + 4 * self._limit + 64:
                self._seen[value] = mapped
            return mapped
