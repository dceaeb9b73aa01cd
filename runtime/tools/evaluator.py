"""The calculator's evaluator: one worker process (``python -I arithmetic.py``), reused,
talked to from one thread of its own, never from the event loop.

Callers queue their expressions and await a future. The thread sends every expression
queued meanwhile (at most ``BATCH_BYTES`` at once) and reads the answers in order (the
process answers its lines one after another), writing and reading as the pipes allow
(``poll``: a full pipe never stalls it, and no descriptor number is too high), so a
burst of calls costs the thread a few turns of the interpreter's lock, not a few per
call: while the event loop keeps the lock busy each turn waits up to the switch
interval (5 ms), and one exchange per call had calls wait past the tool's timeout at
1,000 runs in flight (RESULTS.md section 11d).

An answer that does not come within ``eval_timeout`` of the previous one (none should:
the operands are bounded; a fresh process first says it is ready, within
``START_TIMEOUT``) has its process killed: that expression fails, those behind it are
sent again to a fresh process (evaluation has no side effects). A process that dies or
answers nonsense fails the same way; one that sends a line nobody asked for is replaced
before the next exchange (answers go to callers by their order: one too many would
shift every later one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from agentwatch.telemetry import AgentwatchError

from . import arithmetic

EVAL_TIMEOUT: Final = 1.0  # seconds one evaluation may take in the worker before it is killed
START_TIMEOUT: Final = 5.0  # seconds a fresh process may take to say it is ready
BATCH_BYTES: Final = 32 * 1024  # of expressions sent in one exchange
MAX_REPLY_BYTES: Final = 64 * 1024  # a reply is one JSON line (a result has <= 1000 digits)


class CalculatorError(AgentwatchError, ValueError):
    """The expression is not plain arithmetic or is too big to compute, or the evaluator
    could not answer (it overran, its worker failed, it was closed)."""


Outcome = dict[str, str] | BaseException  # an answer, or why there is none


class _Request:
    __slots__ = ("future", "line", "loop")

    def __init__(self, line: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.line = line
        self.loop = loop
        self.future: asyncio.Future[dict[str, str]] = loop.create_future()


class Evaluator:
    """One evaluator process and the thread that talks to it (started with the first
    call). ``command``: the process (default: ``arithmetic.py`` in isolated mode)."""

    def __init__(
        self, command: Sequence[str] | None = None, eval_timeout: float = EVAL_TIMEOUT
    ) -> None:
        self.pid = os.getpid()  # a forked child makes its own (threads do not survive a fork)
        self.command = list(command or [sys.executable, "-I", str(Path(arithmetic.__file__))])
        self.eval_timeout = eval_timeout
        self._ready = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._process_lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    async def ask(self, expression: str) -> dict[str, str]:
        """The worker's answer to ``expression``: ``{"value": ...}`` or ``{"refused": ...}``;
        ``CalculatorError`` when it overran or the worker failed."""
        request = _Request(json.dumps(expression).encode() + b"\n", asyncio.get_running_loop())
        if self.pid != os.getpid():
            self._forked()
        with self._ready:
            if self._closed:
                raise CalculatorError("the calculator was closed")
            self._queue.append(request)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="agentwatch-calc", daemon=True
                )
                self._thread.start()
            self._ready.notify()
        return await request.future

    def _forked(self) -> None:
        """In a forked child: no thread came along, and the process is the parent's."""
        self.pid = os.getpid()
        self._ready = threading.Condition()
        self._queue = deque()
        self._thread = None
        self._process_lock = threading.Lock()
        self._process = None  # the parent's worker: not this child's to kill

    def close(self) -> None:
        """Stop the thread and the process; calls still queued fail. Blocks (it waits for
        the thread, at most ``eval_timeout`` + 1 s): not for the event loop."""
        if self.pid != os.getpid():
            self._forked()
        with self._ready:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            self._ready.notify()
            thread = self._thread
        for request in dropped:
            _deliver(request, CalculatorError("the calculator was closed"))
        with self._process_lock:
            if self._process is not None:
                self._process.kill()  # an exchange under way ends: its pipe closes
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.eval_timeout + 1)
        self._kill()  # reaped: no zombie

    # --- the thread ---------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return
                batch = self._take()
            try:
                self._answer(batch)
            except BaseException as exc:  # never leave a caller waiting for ever
                self._kill()
                failed = CalculatorError(f"the calculator failed: {type(exc).__name__}")
                for request in batch:
                    _deliver(request, failed)

    def _take(self) -> deque[_Request]:
        """Queued requests whose callers still wait, up to ``BATCH_BYTES`` (at least one)."""
        batch: deque[_Request] = deque()
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].line) <= BATCH_BYTES):
            request = self._queue.popleft()
            if not request.future.cancelled():  # a read across threads: at worst sent anyway
                batch.append(request)
                size += len(request.line)
        return batch

    def _answer(self, pending: deque[_Request]) -> None:
        """Answer every request, in order; the one an overrun or failure fell on fails and
        the rest go to a fresh process."""
        while pending:
            try:
                self._exchange(pending)
            except CalculatorError as exc:
                self._kill()  # a half-finished exchange: the next gets a fresh process
                _deliver(pending.popleft(), exc)

    def _exchange(self, pending: deque[_Request]) -> None:
        process = self._worker()
        assert process.stdin is not None
        assert process.stdout is not None
        stdin, stdout = process.stdin.fileno(), process.stdout.fileno()
        os.set_blocking(stdin, False)
        data = memoryview(b"".join(request.line for request in pending))
        poller = select.poll()
        poller.register(stdout, select.POLLIN)
        poller.register(stdin, select.POLLOUT)
        buffer, since = b"", time.monotonic()
        while pending:
            line, newline, rest = buffer.partition(b"\n")
            if newline:
                buffer = rest
                _deliver(pending[0], _parse(line))
                pending.popleft()
                since = time.monotonic()  # the next evaluation started by now
                continue
            if len(buffer) > MAX_REPLY_BYTES:
                raise _failed()
            remaining = since + self.eval_timeout - time.monotonic()
            events = poller.poll(max(0, math.ceil(remaining * 1000)))
            if not events:
                raise CalculatorError(
                    f"the calculation took longer than {self.eval_timeout:g} s and was stopped"
                )
            for fd, _ in events:
                if fd == stdin:
                    data = data[_write(stdin, data) :]
                    if not data:
                        poller.unregister(stdin)
                    continue
                chunk = os.read(stdout, MAX_REPLY_BYTES)
                if not chunk:
                    raise _failed()
                buffer += chunk
        if buffer:
            self._kill()  # more lines than it was sent: out of step

    def _worker(self) -> subprocess.Popen[bytes]:
        """The worker, ready: a fresh one once it said so (``arithmetic.READY``), a reused
        one with nothing unread (a line nobody asked for: out of step, replaced)."""
        process, fresh = self._start()
        assert process.stdout is not None
        if not fresh and _readable(process.stdout.fileno()):
            self._kill()
            process, fresh = self._start()
        if fresh:
            _await_ready(process)
        return process

    def _start(self) -> tuple[subprocess.Popen[bytes], bool]:
        """The worker process, and whether it was started just now."""
        with self._process_lock:
            if self._closed:
                raise CalculatorError("the calculator was closed")
            if self._process is not None and self._process.poll() is None:
                return self._process, False
            self._kill_locked()
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,
            )
            return self._process, True

    def _kill(self) -> None:
        with self._process_lock:
            self._kill_locked()

    def _kill_locked(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()  # reaped: no zombie
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def _write(fd: int, data: memoryview) -> int:
    """Bytes of ``data`` done with: written to the worker's stdin (non-blocking: 0 when it
    is full), or all of them once its stdin has closed (it died: what it answered before
    is still to be read, and its stdout's end says where it stopped)."""
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError:
        return len(data)


def _readable(fd: int, timeout: float = 0.0) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(math.ceil(timeout * 1000)))


def _await_ready(process: subprocess.Popen[bytes]) -> None:
    """A fresh worker's first line, ``arithmetic.READY``, within ``START_TIMEOUT``."""
    assert process.stdout is not None
    fd, line, deadline = process.stdout.fileno(), b"", time.monotonic() + START_TIMEOUT
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        chunk = os.read(fd, 64) if remaining > 0 and _readable(fd, remaining) else b""
        if not chunk or len(line) > 64:
            raise _failed()
        line += chunk
    if line.strip() != arithmetic.READY.encode():
        raise _failed()


def _failed() -> CalculatorError:
    return CalculatorError("the calculator's worker failed; try again")


def _parse(line: bytes) -> dict[str, str]:
    """A reply line: a JSON object of strings, else the worker failed."""
    try:
        answer = json.loads(line)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not all(isinstance(v, str) for v in answer.values()):
        raise _failed()
    return answer


def _deliver(request: _Request, outcome: Outcome) -> None:
    with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits for it
        request.loop.call_soon_threadsafe(_settle, request.future, outcome)


def _settle(future: asyncio.Future[dict[str, str]], outcome: Outcome) -> None:
    if future.done():  # its caller stopped waiting (the tool's own timeout)
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
