"""The calculator's evaluator: one worker process (``python -I arithmetic.py``), reused,
talked to from one thread of its own, never from the event loop.

Callers queue their expressions and await a future. The thread writes every queued
expression in one write (at most ``BATCH_BYTES``) and reads the answers in order (the
process answers its lines one after another), so a burst of calls costs the thread a
few turns of the interpreter's lock, not a few per call. It had been one call at a
time: while the event loop keeps the lock busy, each turn waits up to the switch
interval (5 ms), an exchange took ~4 ms (p99 ~40 ms), and with 1,000 runs in flight
on a 5 s model 873 tool calls of ~3,700 waited past the tool's 2 s timeout.

An answer that does not come within ``eval_timeout`` of the previous one (none should:
the operands are bounded) has its process killed: that expression fails, those behind
it are sent again to a fresh process (evaluation has no side effects). A process that
dies or answers nonsense fails the expression it was on, the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
BATCH_BYTES: Final = 32 * 1024  # written at once: under a pipe's 64 KiB, the write never waits
MAX_REPLY_BYTES: Final = 64 * 1024  # a reply is one JSON line (a result has <= 1000 digits)


class CalculatorError(AgentwatchError, ValueError):
    """The expression is not plain arithmetic, or is too big to compute."""


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

    def close(self) -> None:
        """Stop the thread and the process; calls still queued fail. Blocks (it waits for
        the thread, at most ``eval_timeout`` + 1 s): not for the event loop."""
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
        process = self._start()
        assert process.stdin is not None
        assert process.stdout is not None
        data = b"".join(request.line for request in pending)
        try:
            while data:
                data = data[os.write(process.stdin.fileno(), data) :]
        except OSError:
            raise CalculatorError("the calculator's worker failed; try again") from None
        fd, buffer, since = process.stdout.fileno(), b"", time.monotonic()
        while pending:
            line, newline, rest = buffer.partition(b"\n")
            if newline:
                buffer = rest
                _deliver(pending[0], _parse(line))
                pending.popleft()
                since = time.monotonic()  # the next evaluation started by now
                continue
            if len(buffer) > MAX_REPLY_BYTES:
                raise CalculatorError("the calculator's worker failed; try again")
            remaining = since + self.eval_timeout - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise CalculatorError(
                    f"the calculation took longer than {self.eval_timeout:g} s and was stopped"
                )
            chunk = os.read(fd, MAX_REPLY_BYTES)
            if not chunk:
                raise CalculatorError("the calculator's worker failed; try again")
            buffer += chunk

    def _start(self) -> subprocess.Popen[bytes]:
        with self._process_lock:
            if self._closed:
                raise CalculatorError("the calculator was closed")
            if self._process is None or self._process.poll() is not None:
                self._kill_locked()
                self._process = subprocess.Popen(
                    self.command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    bufsize=0,
                )
            return self._process

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


def _parse(line: bytes) -> dict[str, str]:
    """A reply line: a JSON object of strings, else the worker failed."""
    try:
        answer = json.loads(line)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not all(isinstance(v, str) for v in answer.values()):
        raise CalculatorError("the calculator's worker failed; try again")
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
