"""``JsonlResultSink``: a batch's results in a JSONL file, on disk before reported,
resumable, one writer (a ``ResultSink``, sink.py).

- ``add(record)`` returns once the record's line is written and ``fdatasync``-ed. Records
  that arrive while a sync is running are written together by the next one (group
  commit), off the event loop. A failed write (disk full, I/O error) fails that ``add``
  and every later one with ``ResultWriteError``: nothing is reported done that is not on
  disk, and the partial bytes are cut off again. A ``cancelled`` record is not written
  (its task has no result: it runs again on resume).
- The file is opened with an exclusive, non-blocking ``flock``: a second batch on the
  same file is refused (``ResultFileLocked``) instead of interleaving its lines. Only a
  regular file will do (not a directory, pipe, terminal or device), in a directory that
  exists (none is created), and never the tasks file itself.
- On open the file is read back, each line bounded to ``MAX_LINE_BYTES``. Every valid
  record is kept (the last one wins when an id appears twice: a task run again with
  ``retry_failed``). Lines that are not valid records are moved to ``<out>.corrupt``
  with a warning naming their line numbers, and their tasks run again. A torn last line
  is what a kill mid-write leaves: it is cut off. Rewrites go through a temporary file
  and an atomic rename, so a crash during one loses nothing.

Execution is at-least-once: a task that finished but whose record had not reached the
file when the process died runs again on resume. The file ends with each id's result
exactly once.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import stat
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from agentwatch.telemetry import AgentwatchError

from .sink import Record, RecordTooLarge
from .task import FINAL, TaskStatus

_logger = logging.getLogger("agentwatch.batch")

MAX_LINE_BYTES = 16 * 1024 * 1024  # one record, newline included
_CHUNK = 1 << 16
_SHOWN_LINES = 20


class ResultFileError(AgentwatchError):
    """The results file cannot be used (wrong kind of file, cannot be opened)."""


class ResultFileLocked(ResultFileError):
    """Another process holds the results file: two batches must not share one file."""


class ResultWriteError(ResultFileError):
    """Writing or syncing results failed; the batch stops, what is on disk is kept."""

    def __init__(self, path: Path, exc: OSError) -> None:
        self.path = path
        self.os_error = exc
        reason = exc.strerror or str(exc)
        super().__init__(f"cannot write results to {path}: [Errno {exc.errno}] {reason}")


def encode_record(record: Record) -> bytes:
    """``record`` as one JSONL line; ``RecordTooLarge`` if it could not be read back."""
    line = json.dumps(record, default=str).encode() + b"\n"
    if len(line) > MAX_LINE_BYTES:
        raise RecordTooLarge(
            f"result too large to record ({len(line)} bytes; at most {MAX_LINE_BYTES})"
        )
    return line


def check_results_path(path: Path, tasks: Path | None = None) -> None:
    """Raise ``ResultFileError`` unless ``path`` is a regular file or does not exist yet
    in a directory that does (no directory is created: a typo must not make a tree), and
    is not the ``tasks`` file itself (through a symlink or hard link too)."""
    try:
        named = path.stat()
    except FileNotFoundError:
        _check_directory(path)
        return
    except OSError as exc:
        raise ResultFileError(f"cannot use {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(named.st_mode):
        raise ResultFileError(
            f"{path} is a directory; results go to a file (e.g. {path}/out.jsonl)"
        )
    if not stat.S_ISREG(named.st_mode):
        raise ResultFileError(
            f"{path} is not a regular file (a device, pipe or terminal); results go to a "
            "regular file that a rerun can read back"
        )
    if tasks is not None and _is_file(tasks, named):
        raise ResultFileError(
            f"{path} is the tasks file {tasks}; results would overwrite the tasks. "
            "Choose another --out (nothing was touched)"
        )


def _check_directory(path: Path) -> None:
    parent = path.parent
    try:
        mode = parent.stat().st_mode
    except FileNotFoundError:
        raise ResultFileError(
            f"the directory {parent} does not exist; create it first "
            "(the batch creates no directories)"
        ) from None
    except OSError as exc:
        raise ResultFileError(f"cannot use {parent}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(mode):
        raise ResultFileError(f"{parent} is not a directory")


def _is_file(path: Path, named: os.stat_result) -> bool:
    try:
        other = path.stat()
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (named.st_dev, named.st_ino)


def load_results(path: Path) -> dict[str, Record]:
    """The valid records in ``path`` by id, last one winning (reads only; blocking)."""
    check_results_path(path)
    if not path.exists():
        return {}
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _scan(fd).records
    finally:
        os.close(fd)


class JsonlResultSink:
    """Append-only JSONL results, one writer per file; disk work happens in a thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.done: dict[str, Record] = {}  # id -> its record on disk
        self.commits = 0  # syncs done (each writes every record that was waiting)
        self.written = 0  # records written
        self._fd: int | None = None
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._error: ResultWriteError | None = None
        self._superseded = 0

    async def open(self) -> Mapping[str, Record]:
        """Lock the file, read back its records (repairing it), open it for appends;
        the records on disk by id (``done``)."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already open")
        self._fd, self.done = await asyncio.to_thread(self._open)
        self._error, self._superseded = None, 0
        return self.done

    def check(self, record: Record) -> None:
        """``RecordTooLarge`` if ``record``'s line would pass ``MAX_LINE_BYTES``."""
        encode_record(record)

    async def add(self, record: Record) -> None:
        """Append ``record``; returns once it is on disk. Raises ``ResultWriteError``.

        A completed record is final. A failed or timed-out one is superseded by a later
        record of the same id (the file is compacted on close, and on the next open).
        A cancelled one is not written.
        """
        if not _is_final(record):
            return  # cancelled: no result
        if self._error is not None:
            raise self._error
        if self._fd is None:
            raise RuntimeError(f"{self.path} is not open")
        task_id = str(record["id"])
        previous = self.done.get(task_id)
        if previous is not None and previous.get("status") == TaskStatus.COMPLETED:
            return
        line = encode_record(record)
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        self._pending.append((line, written))
        if self._writer is None:
            self._writer = loop.create_task(self._write_pending(), name="batch-results-writer")
        await written
        if previous is not None:
            self._superseded += 1
        self.done[task_id] = record

    async def close(self) -> None:
        """Write what is waiting, compact superseded records, release the file."""
        if self._writer is not None:
            await asyncio.wait([self._writer])  # never raises: outcomes went to the adds
        fd, self._fd = self._fd, None
        if fd is not None:
            compact = self._superseded > 0 and self._error is None
            await asyncio.to_thread(self._release, fd, compact)

    # -- in threads ----------------------------------------------------------------
    def _open(self) -> tuple[int, dict[str, Record]]:
        check_results_path(self.path)
        try:
            fd = _open_locked(self.path)
        except OSError as exc:
            raise ResultFileError(f"cannot open {self.path}: {exc.strerror or exc}") from None
        try:
            scan = _scan(fd)
            fd = _repair(self.path, fd, scan)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            os.close(fd)
            raise ResultFileError(f"cannot repair {self.path}: {exc.strerror or exc}") from None
        except BaseException:
            os.close(fd)
            raise
        return fd, scan.records

    def _append(self, chunk: bytes) -> None:
        fd = self._fd
        assert fd is not None
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            _write_all(fd, chunk)
            os.fdatasync(fd)
        except OSError:
            with suppress(OSError):
                os.ftruncate(fd, start)  # no partial line left behind
            raise

    def _release(self, fd: int, compact: bool) -> None:
        try:
            if compact:
                try:
                    fd = _repair(self.path, fd, _scan(fd))
                except OSError as exc:
                    _logger.warning("%s: could not compact (%s); the next run will", self.path, exc)
        finally:
            os.close(fd)

    # -- on the loop ---------------------------------------------------------------
    async def _write_pending(self) -> None:
        batch: list[tuple[bytes, asyncio.Future[None]]] = []
        try:
            while self._pending:  # bounded: each pass takes what is waiting
                batch, self._pending = self._pending, []
                try:
                    await asyncio.to_thread(self._append, b"".join(line for line, _ in batch))
                except OSError as exc:
                    self._error = ResultWriteError(self.path, exc)  # raised by every add
                    for _, waiter in batch + self._pending:
                        if not waiter.done():
                            waiter.set_exception(self._error)
                    self._pending = []
                    return
                self.commits += 1
                self.written += len(batch)
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_result(None)
                batch = []
        finally:
            for _, waiter in batch + self._pending:  # only when cancelled mid-write
                waiter.cancel()
            self._writer = None


ResultStore = JsonlResultSink  # its first name, public in agentwatch.runtime


@dataclass(slots=True)
class _Scan:
    records: dict[str, Record] = field(default_factory=dict)
    kept: dict[str, bytes] = field(default_factory=dict)  # id -> its last valid line
    bad: list[tuple[int, int, int, str]] = field(default_factory=list)  # line, start, end, why
    superseded: int = 0
    good_end: int = 0  # offset after the last whole line
    size: int = 0


def _scan(fd: int) -> _Scan:
    """Read every line of the file (each at most ``MAX_LINE_BYTES`` in memory)."""
    scan = _Scan()
    with open(os.dup(fd), "rb", buffering=_CHUNK) as handle:
        handle.seek(0)
        number = offset = 0
        while raw := handle.readline(MAX_LINE_BYTES):  # bounded by the file's size
            number += 1
            start, offset = offset, offset + len(raw)
            if not raw.endswith(b"\n"):
                if len(raw) < MAX_LINE_BYTES:
                    break  # torn: the writer was killed mid-line
                while not raw.endswith(b"\n"):  # too long: skip it in chunks
                    raw = handle.readline(_CHUNK)
                    if not raw:
                        break
                    offset += len(raw)
                if not raw.endswith(b"\n"):
                    break  # a torn tail, however long
                scan.bad.append((number, start, offset, f"longer than {MAX_LINE_BYTES} bytes"))
            else:
                _take_line(scan, raw, number, start, offset)
            scan.good_end = offset
        scan.size = os.fstat(fd).st_size
    return scan


def _take_line(scan: _Scan, raw: bytes, number: int, start: int, end: int) -> None:
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        scan.bad.append((number, start, end, "not JSON"))
        return
    task_id = record.get("id") if isinstance(record, dict) else None
    if not isinstance(task_id, str | int) or isinstance(task_id, bool) or str(task_id) == "":
        scan.bad.append((number, start, end, "not a record with an id"))
        return
    if not _is_final(record):
        scan.bad.append((number, start, end, "no final status"))
        return
    key = str(task_id)
    if key in scan.kept:
        scan.superseded += 1
        del scan.kept[key]  # the later record wins, at its own place in the file
    scan.kept[key] = raw
    scan.records[key] = record


def _is_final(record: Record) -> bool:
    status = record.get("status")
    return isinstance(status, str) and status in FINAL  # a list or object is no status


def _repair(path: Path, fd: int, scan: _Scan) -> int:
    """Make the file whole lines of valid records, each id once; returns the fd to use."""
    if scan.bad or scan.superseded:
        if scan.bad:
            _set_aside(path, fd, scan.bad)
        fd = _rewrite(path, fd, b"".join(scan.kept.values()))
    elif scan.good_end < scan.size:
        _logger.warning(
            "%s: cutting off a torn last line (%d bytes, a crash mid-write); its task runs again",
            path,
            scan.size - scan.good_end,
        )
        os.ftruncate(fd, scan.good_end)
        os.fsync(fd)
    return fd


def _set_aside(path: Path, fd: int, bad: list[tuple[int, int, int, str]]) -> None:
    corrupt = path.with_name(path.name + ".corrupt")
    with open(corrupt, "ab") as out:
        for _, start, end, _ in bad:
            position = start
            while position < end:  # bounded: copies the line's bytes in chunks
                chunk = os.pread(fd, min(_CHUNK, end - position), position)
                if not chunk:
                    break
                out.write(chunk)
                position += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    shown = ", ".join(f"{number} ({why})" for number, _, _, why in bad[:_SHOWN_LINES])
    more = f" and {len(bad) - _SHOWN_LINES} more" if len(bad) > _SHOWN_LINES else ""
    _logger.warning(
        "%s: %d line(s) are not valid records and were moved to %s: line %s%s; "
        "every valid record is kept, those tasks run again",
        path,
        len(bad),
        corrupt,
        shown,
        more,
    )


def _rewrite(path: Path, fd: int, content: bytes) -> int:
    """Replace the file by ``content`` atomically; the new file is locked before it is
    visible, so no other process can take it in between. Closes ``fd``."""
    path = Path(os.path.realpath(path))  # through a symlink: replace its target, not it
    temporary = path.with_name(f".{path.name}.rewrite")
    new = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC)
    try:
        fcntl.flock(new, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.fchmod(new, stat.S_IMODE(os.fstat(fd).st_mode))
        _write_all(new, content)
        os.fsync(new)
        os.replace(temporary, path)
        _fsync_dir(path.parent)
    except BaseException:
        os.close(new)
        with suppress(OSError):
            os.unlink(temporary)
        raise
    os.close(fd)
    return new


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # bounded: every pass writes at least one byte or raises
        count = os.write(fd, view)
        if count <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[count:]


def _open_locked(path: Path) -> int:
    """Open ``path`` for appending under an exclusive lock (``ResultFileLocked`` if held)."""
    for _ in range(5):  # bounded: the holder may replace the file between open and lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ResultFileError(f"{path} is not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ResultFileLocked(
                    f"{path} is in use by another batch (it holds the file's lock); "
                    "wait for it to finish or choose another --out"
                ) from None
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # replaced after we opened it: open the new one
    raise ResultFileLocked(f"{path} keeps being replaced by another process")


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
