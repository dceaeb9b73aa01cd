"""The calculator's evaluator: arithmetic on simpleeval, every operand bounded, never ``eval``.

Bounded by construction: integers never exceed ``MAX_RESULT_DIGITS`` digits (checked
on every operand and every result), powers are checked *before* they are computed
(exponent and result size), ``round``'s ``ndigits`` is bounded (``round(1, -10**8)``
would compute ``10**(10**8)``), and only numbers reach the allowed functions. So every
operation takes microseconds and an expression of ``MAX_EXPRESSION_CHARS`` characters
a bounded time.

This module imports only the standard library and simpleeval, so that the calculator
tool can run it as a script in a worker process (``python -I arithmetic.py``, ~50 ms
to start) that a timeout can kill: see ``evaluator.py``. As a script it reads one JSON
string (an expression) per line on stdin and writes one JSON line per expression:
``{"value": "42"}`` or ``{"refused": "why"}``.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import sys
from collections.abc import Callable
from typing import Any, Final

import simpleeval

READY: Final = '"ready"'  # the worker's first line, before any answer
MAX_EXPRESSION_CHARS: Final = 200
MAX_RESULT_DIGITS: Final = 1000
MAX_EXPONENT: Final = 10_000
MAX_NDIGITS: Final = MAX_RESULT_DIGITS  # round(x, n): |n| at most this
_INT_LIMIT: Final = 10**MAX_RESULT_DIGITS  # every integer stays below this in magnitude
_ALLOWED_CHARS: Final = re.compile(r"^[0-9a-z_\s.+\-*/%^(),]*$")


class Refused(ValueError):
    """The expression is not plain arithmetic, or is too big to compute."""


def _number(value: Any) -> int | float:
    """``value`` if it is a real number within the size limit, else ``Refused``."""
    if isinstance(value, int):
        if abs(value) >= _INT_LIMIT:
            raise Refused(f"the result would exceed {MAX_RESULT_DIGITS} digits")
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, complex):
        raise Refused("the result is not a real number")
    raise Refused("only numbers can be combined")


def _binary(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        return _number(op(_number(a), _number(b)))

    return apply


def _unary(op: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(a: Any) -> Any:
        return _number(op(_number(a)))

    return apply


def _power(base: Any, exponent: Any) -> Any:
    base, exponent = _number(base), _number(exponent)
    if isinstance(base, int) and isinstance(exponent, int):
        # checked before computing: 9 ** 9 ** 9 must never start
        magnitude = math.log10(abs(base)) if abs(base) > 1 else 0.0
        if abs(exponent) > MAX_EXPONENT or magnitude * abs(exponent) > MAX_RESULT_DIGITS:
            raise Refused(
                f"the power is too large (results are limited to {MAX_RESULT_DIGITS} digits)"
            )
    # with a float on either side the power is one C call: fast, or OverflowError
    return _number(operator.pow(base, exponent))


def _round(value: Any, ndigits: Any = None) -> Any:
    value = _number(value)
    if ndigits is None:
        return _number(round(value))
    if isinstance(ndigits, bool) or not isinstance(ndigits, int) or abs(ndigits) > MAX_NDIGITS:
        raise Refused(
            f"round(x, n): n must be a whole number between -{MAX_NDIGITS} and {MAX_NDIGITS}"
        )
    return _number(round(value, ndigits))


def _function(func: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return _number(func(*(_number(a) for a in args)))

    call.__name__ = getattr(func, "__name__", "function")
    return call


_OPERATORS: Final = {
    ast.Add: _binary(operator.add),
    ast.Sub: _binary(operator.sub),
    ast.Mult: _binary(operator.mul),
    ast.Div: _binary(operator.truediv),
    ast.FloorDiv: _binary(operator.floordiv),
    ast.Mod: _binary(operator.mod),
    ast.Pow: _power,
    ast.USub: _unary(operator.neg),
    ast.UAdd: _unary(operator.pos),
}
_NUMERIC_FUNCTIONS: Final[dict[str, Callable[..., Any]]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}
_FUNCTIONS: Final = {
    "round": _round,
    **{name: _function(func) for name, func in _NUMERIC_FUNCTIONS.items()},
}
_NAMES: Final = {"pi": math.pi, "e": math.e}


def evaluate(expression: str) -> str:
    """The value of ``expression`` as text, or ``Refused`` saying why not."""
    text = expression.strip().lower()
    if not text:
        raise Refused("the expression is empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise Refused(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    if not _ALLOWED_CHARS.match(text) or "__" in text:
        raise Refused(
            "only numbers, + - * / // % ** ^, parentheses and "
            f"{', '.join(sorted(_FUNCTIONS))}, pi, e are allowed"
        )
    text = text.replace("^", "**")
    evaluator = simpleeval.SimpleEval(
        operators=_OPERATORS, functions=_FUNCTIONS, names=_NAMES, allowed_attrs={}
    )
    try:
        tree = ast.parse(text, mode="eval")  # one expression: never several lines
        value = evaluator.eval(text, previously_parsed=tree.body)
    except Refused:
        raise
    except ZeroDivisionError:
        raise Refused("division by zero") from None
    except (simpleeval.NameNotDefined, simpleeval.FunctionNotDefined) as exc:
        name = getattr(exc, "name", None) or getattr(exc, "func_name", "?")
        raise Refused(f"unknown name {name!r}") from None
    except (OverflowError, simpleeval.NumberTooHigh):
        raise Refused("the number is too large") from None
    except RecursionError:
        raise Refused("the expression is nested too deeply") from None
    except (SyntaxError, simpleeval.InvalidExpression, TypeError, ValueError) as exc:
        raise Refused(f"not a valid arithmetic expression ({type(exc).__name__})") from None
    except Exception as exc:  # whatever else simpleeval raises: still the user's input
        raise Refused(f"not a valid arithmetic expression ({type(exc).__name__})") from None
    return _format(value)


def _format(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused("the expression does not evaluate to a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Refused("the result is not a finite number")
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.12g}"
    return str(_number(value))


def answer(line: str) -> str:
    """One request of the worker protocol: a JSON string in, a JSON object out."""
    try:
        expression = json.loads(line)
        if not isinstance(expression, str):
            raise Refused("the expression must be a string")
        return json.dumps({"value": evaluate(expression)})
    except Refused as exc:
        return json.dumps({"refused": str(exc)})
    except Exception as exc:  # a worker answers every line: never dies on one
        return json.dumps({"refused": f"the calculator failed ({type(exc).__name__})"})


def _limit_memory(max_bytes: int) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))
    except (ImportError, ValueError, OSError):  # not on this platform: the timeout still holds
        pass


def serve(max_bytes: int = 512 * 1024 * 1024) -> None:
    """The worker loop: answer each line of stdin until it closes (the parent went away)."""
    _limit_memory(max_bytes)
    sys.stdout.write(READY + "\n")  # started: the parent times answers from here
    sys.stdout.flush()
    for line in sys.stdin:
        sys.stdout.write(answer(line) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
