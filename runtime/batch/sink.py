"""``ResultSink``: where a batch's results go. The processor knows this protocol only.

How the processor uses a sink, in one run of a batch:

- ``await open()`` once, before any task starts: the records already in the sink by
  task id, the last one of each. A task whose record there has a final status
  (completed, failed, timed_out) is not run again (resume); with ``retry_failed`` the
  failed and timed-out ones are.
- ``check(record)`` while the task still runs, before it counts as completed: raises
  ``RecordTooLarge`` if this sink could never hold the record, and the task ends
  ``failed`` instead of being reported done and then lost.
- ``await add(record)`` once for every task of the run that ended: from its worker once
  its status is settled, from many workers at once; a task that ended without a worker
  (cancelled in the queue, or when the batch was torn down) when the run ends. It
  returns only when the record is durable *as this sink defines durable*; only then is
  the task reported done (``on_progress``), and a worker takes its next task only then.
  A ``cancelled`` record carries no result: a sink that resumes may drop it (its task
  runs again). A later record of an id supersedes an earlier one (``retry_failed``);
  a completed one is final. If ``add`` raises, the batch stops and ``run()`` raises it.
- ``await close()`` once, after every ``add`` has returned, whether the run finished,
  failed or was cancelled.

Durability is each sink's own, stated in its docstring:
- ``JsonlResultSink`` (jsonl_sink.py): the record's line is written and ``fdatasync``-ed
  before ``add`` returns (group commit: records that arrive during a sync share the
  next one); it survives a crash of the process. Execution is at-least-once: a task
  that ended but whose record was not yet synced runs again on resume.
- ``MemoryResultSink`` (memory_sink.py): durable for the life of the process only; a
  crash loses every record, and there is nothing to resume from.

A sink that ``/v1/batches`` pages read is a ``PagedResultSink``: its records read back
in the order they were added (``count``, ``page``), append only, so that an offset into
them (the cursor) stays valid.

A new sink (e.g. Redis) is one module implementing these methods, plus the line that
constructs it where a batch is started (runtime/cli/batch.py, runtime/service/batches.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

Record = dict[str, Any]  # ``Task.record()``: id, status, priority, result, error


class RecordTooLarge(ValueError):
    """A record longer than a sink can hold (or read back)."""


class ResultSink(Protocol):
    """Where a batch's results go; see the module docstring for the contract."""

    async def open(self) -> Mapping[str, Record]:
        """Take the sink for one run; the records already in it, by task id."""
        ...

    def check(self, record: Record) -> None:
        """Raise ``RecordTooLarge`` if this sink could never hold ``record``."""
        ...

    async def add(self, record: Record) -> None:
        """Keep ``record``; return once it is durable as this sink defines it."""
        ...

    async def close(self) -> None:
        """Release the sink (every ``add`` has returned)."""
        ...


class PagedResultSink(ResultSink, Protocol):
    """A ``ResultSink`` whose records read back in the order they were added."""

    def count(self) -> int:
        """How many records were added so far."""
        ...

    async def page(self, start: int, limit: int) -> list[Record]:
        """At most ``limit`` records from the ``start``-th (0-based), in the order added."""
        ...
