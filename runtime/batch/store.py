"""Results streamed to a JSONL file, resumable after a crash.

Records are appended as tasks finish and flushed with ``fsync`` in batches (every
``flush_every`` records or ``flush_interval`` seconds), off the event loop. On open, the
file is read back: finished ids are skipped by the next run, and a torn last line (a
kill mid-write) is cut off, so the file is always whole lines of JSON, each id once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

_logger = logging.getLogger("agentwatch.batch")


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    """The records already in ``path`` by id; repairs a torn or corrupt tail (blocking)."""
    if not path.exists():
        return {}
    records: dict[str, dict[str, Any]] = {}
    good_end = 0
    with path.open("rb") as handle:
        offset = 0
        for raw in handle:
            end = offset + len(raw)
            if not raw.endswith(b"\n"):
                break  # torn: the writer was killed mid-line
            try:
                record = json.loads(raw)
                task_id = str(record["id"])
            except (ValueError, KeyError, TypeError):
                break  # corrupt: stop trusting the file here
            records.setdefault(task_id, record)
            good_end = offset = end
    size = path.stat().st_size
    if good_end < size:
        _logger.warning("repairing %s: dropping %d bytes of torn tail", path, size - good_end)
        with path.open("r+b") as handle:
            handle.truncate(good_end)
            handle.flush()
            os.fsync(handle.fileno())
    return records


class ResultStore:
    """Append-only JSONL results; ``add`` is cheap, disk work happens in a thread."""

    def __init__(self, path: Path, *, flush_every: int = 64, flush_interval: float = 0.5) -> None:
        self.path = path
        self.flush_every = flush_every
        self.flush_interval = flush_interval
        self.done: dict[str, dict[str, Any]] = {}
        self._pending: list[bytes] = []
        self._handle: Any = None
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def open(self) -> ResultStore:
        self.done, self._handle = await asyncio.to_thread(self._open)
        return self

    def _open(self) -> tuple[dict[str, dict[str, Any]], Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return load_results(self.path), self.path.open("ab")

    def add(self, record: dict[str, Any]) -> None:
        task_id = str(record["id"])
        if task_id in self.done:
            return  # each id once, whatever happens
        self.done[task_id] = record
        self._pending.append(json.dumps(record, default=str).encode() + b"\n")
        if len(self._pending) >= self.flush_every:
            self._spawn_flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.flush_interval, self._spawn_flush)

    def _spawn_flush(self) -> None:
        task = asyncio.get_running_loop().create_task(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        async with self._lock:
            if not self._pending or self._handle is None:
                return
            chunk, self._pending = b"".join(self._pending), []
            await asyncio.to_thread(_write_and_sync, self._handle, chunk)

    async def close(self) -> None:
        await self.flush()
        if self._flushes:
            await asyncio.gather(*self._flushes)
        if self._handle is not None:
            handle, self._handle = self._handle, None
            await asyncio.to_thread(handle.close)


def _write_and_sync(handle: Any, chunk: bytes) -> None:
    handle.write(chunk)
    handle.flush()
    os.fsync(handle.fileno())
