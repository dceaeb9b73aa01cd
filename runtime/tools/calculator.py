"""The ``calculator`` tool: arithmetic on simpleeval, with limits, never ``eval``.

Only numbers, + - * / // % ** (``^`` means power), parentheses, a few math functions
and the constants pi and e. No names, attributes, strings, comprehensions or calls
beyond the allowlist; the expression length, every operand, powers, ``round``'s
digits and the result size are bounded (``arithmetic.py``), so that no input can take
more than a bounded time or memory.

The tool never computes on the event loop. Each expression goes to one persistent
worker process (``python -I arithmetic.py``, which imports neither agentwatch nor
LangChain and starts in ~50 ms), talked to from one dedicated thread, calls queued
meanwhile sent together (``evaluator.py``). An evaluation that overruns
``EVAL_TIMEOUT`` — none should, the bounds are the first line of defence — has its
process killed and replaced: a timeout really stops the work, and the loop,
``/healthz`` and every other run go on meanwhile.
"""

from __future__ import annotations

import atexit
import os

from pydantic import BaseModel, Field

from . import arithmetic
from .arithmetic import MAX_EXPONENT, MAX_EXPRESSION_CHARS, MAX_NDIGITS, MAX_RESULT_DIGITS
from .evaluator import EVAL_TIMEOUT, CalculatorError, Evaluator

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


_evaluator: Evaluator | None = None


@atexit.register
def _close_evaluator() -> None:
    """The worker would exit by itself when its stdin closes; reaped here, it leaves no
    zombie behind for the init process to collect."""
    if _evaluator is not None and _evaluator.pid == os.getpid():
        _evaluator.close()


def _the_evaluator() -> Evaluator:
    global _evaluator
    if _evaluator is None or _evaluator.pid != os.getpid():
        _evaluator = Evaluator()
    return _evaluator


async def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    expression = expression.strip()
    if len(expression) > MAX_EXPRESSION_CHARS:
        return evaluate(expression)  # refused at once: nothing long goes to the worker
    # The tool's own timeout (ToolSpec.timeout) may stop waiting sooner; the evaluator's
    # thread then finishes the exchange by itself, within EVAL_TIMEOUT, and kills an overrun.
    answer = await _the_evaluator().ask(expression)
    if "value" in answer:
        return str(answer["value"])
    raise CalculatorError(str(answer.get("refused", "the calculator failed")))
