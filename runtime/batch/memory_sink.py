"""``MemoryResultSink``: a batch's results in memory (a ``PagedResultSink``, sink.py).

Durable for the life of the process only: ``add`` returns at once, a crash loses every
record and leaves nothing to resume from. Every record is kept, cancelled ones too, in
the order they were added (``records``, append only): ``/v1/batches/{id}/results``
pages through them (``page``), so that following its cursor gives each record exactly
once even while the batch runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .sink import Record


class MemoryResultSink:
    """Records in the order they were added; the last one of each id for resume."""

    def __init__(self) -> None:
        self._records: list[Record] = []
        self._last: dict[str, Record] = {}  # id -> its latest record

    @property
    def records(self) -> Sequence[Record]:
        """Every record added, in order (append only: an offset into it stays valid)."""
        return self._records

    async def open(self) -> Mapping[str, Record]:
        return dict(self._last)

    def check(self, record: Record) -> None:
        """Any record fits."""

    async def add(self, record: Record) -> None:
        self._records.append(record)
        self._last[str(record["id"])] = record

    async def close(self) -> None:
        """Nothing to release: the records stay readable."""

    def count(self) -> int:
        return len(self._records)

    async def page(self, start: int, limit: int) -> list[Record]:
        return self._records[start : start + limit]
