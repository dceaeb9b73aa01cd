"""The ``calculator`` tool: arithmetic on simpleeval, with limits, never ``eval``.

Only numbers, + - * / // % ** (``^`` means power), parentheses, a few math functions
and the constants pi and e. No names, attributes, strings, comprehensions or calls
beyond the allowlist; the expression length, every operand, powers, ``round``'s
digits and the result size are bounded (``arithmetic.py``), so that no input can take
more than a bounded time or memory.

The tool never computes on the event loop. Each expression goes to one persistent
worker process (``python -I arithmetic.py``, which imports neither agentwatch nor
LangChain and starts in ~50 ms), talked to from one dedicated thread. An evaluation
that overruns ``EVAL_TIMEOUT`` — none should, the bounds are the first line of
defence — has its process killed and replaced: a timeout really stops the work, and
the loop, ``/healthz`` and every other run go on meanwhile.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from pydantic import BaseModel, Field

from agentwatch.telemetry import AgentwatchError

from . import arithmetic
from .arithmetic import MAX_EXPONENT, MAX_EXPRESSION_CHARS, MAX_NDIGITS, MAX_RESULT_DIGITS

__all__ = [
    "EVAL_TIMEOUT",
    "MAX_EXPONENT",
    "MAX_EXPRESSION_CHARS",
    "MAX_NDIGITS",
    "MAX_RESULT_DIGITS",
    "CalculatorArgs",
    "CalculatorError",
    "calculator",
    "evaluate",
]

EVAL_TIMEOUT: Final = 1.0  # seconds one evaluation may take in the worker before it is killed
_MAX_REPLY_BYTES: Final = 64 * 1024  # a reply is one JSON line (a result has <= 1000 digits)


class CalculatorError(AgentwatchError, ValueError):
    """The expression is not plain arithmetic, or is too big to compute."""


class CalculatorArgs(BaseModel):
    expression: str = Field(
        description="An arithmetic expression, e.g. '123 + 456' or 'sqrt(2) * (3 + 4) ** 2'",
        max_length=MAX_EXPRESSION_CHARS * 4,
    )


def evaluate(expression: str) -> str:
    """The value of ``expression`` as text, or ``CalculatorError`` saying why not.

    In this process and thread: bounded by construction, but a timeout cannot stop it.
    The tool (``calculator``) runs it in the worker process instead."""
    try:
        return arithmetic.evaluate(expression)
    except arithmetic.Refused as exc:
        raise CalculatorError(str(exc)) from None


class _Worker:
    """One evaluator process, reused; killed and replaced when it overruns or dies.

    Talked to from its own single thread (``executor``), never from the event loop."""

    def __init__(self) -> None:
        self.pid = os.getpid()  # a forked child makes its own (threads do not survive a fork)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentwatch-calc")
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            self._kill()
            self._process = subprocess.Popen(
                [sys.executable, "-I", str(Path(arithmetic.__file__))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,
            )
        return self._process

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()  # reaped: no zombie
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()

    def ask(self, expression: str, timeout: float) -> dict[str, str]:
        """Send one expression and wait at most ``timeout`` seconds for its answer."""
        with self._lock:
            try:
                return self._ask(expression, timeout)
            except BaseException:
                self._kill()  # a half-finished exchange: the next call gets a fresh process
                raise

    def _ask(self, expression: str, timeout: float) -> dict[str, str]:
        process = self._start()
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            # one line of ASCII (JSON escapes the rest), far below PIPE_BUF: written whole
            process.stdin.write(json.dumps(expression).encode() + b"\n")
        except OSError:
            raise CalculatorError("the calculator's worker failed; try again") from None
        fd = process.stdout.fileno()
        deadline = time.monotonic() + timeout
        reply = b""
        while not reply.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise CalculatorError(
                    f"the calculation took longer than {timeout:g} s and was stopped"
                )
            chunk = os.read(fd, 4096)
            if not chunk or len(reply) + len(chunk) > _MAX_REPLY_BYTES:
                raise CalculatorError("the calculator's worker failed; try again")
            reply += chunk
        answer: dict[str, str] = json.loads(reply)
        return answer

    def close(self) -> None:
        with self._lock:
            self._kill()


_worker: _Worker | None = None


@atexit.register
def _close_worker() -> None:
    """The worker would exit by itself when its stdin closes; reaped here, it leaves no
    zombie behind for the init process to collect."""
    if _worker is not None and _worker.pid == os.getpid():
        _worker.close()


def _the_worker() -> _Worker:
    global _worker
    if _worker is None or _worker.pid != os.getpid():
        _worker = _Worker()
    return _worker


async def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    expression = expression.strip()
    if len(expression) > MAX_EXPRESSION_CHARS:
        return evaluate(expression)  # refused at once: nothing long goes to the worker
    worker = _the_worker()
    loop = asyncio.get_running_loop()
    # The tool's own timeout (ToolSpec.timeout) may stop waiting sooner; the thread then
    # finishes this exchange by itself, within EVAL_TIMEOUT, and kills an overrun.
    answer = await loop.run_in_executor(worker.executor, worker.ask, expression, EVAL_TIMEOUT)
    if "value" in answer:
        return str(answer["value"])
    raise CalculatorError(str(answer.get("refused", "the calculator failed")))
