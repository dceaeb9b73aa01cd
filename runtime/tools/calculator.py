"""The ``calculator`` tool: arithmetic on simpleeval, with limits, never ``eval``.

Only numbers, + - * / // % ** (``^`` means power), parentheses, a few math functions
and the constants pi and e. No names, attributes, strings, comprehensions or calls
beyond the allowlist; the expression length, powers and result size are bounded so
that no input can take more than a bounded time or memory.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from typing import Any, Final

import simpleeval
from pydantic import BaseModel, Field

from agentwatch.telemetry import AgentwatchError

MAX_EXPRESSION_CHARS: Final = 200
MAX_RESULT_DIGITS: Final = 1000
MAX_EXPONENT: Final = 10_000
_ALLOWED_CHARS = re.compile(r"^[0-9a-z_\s.+\-*/%^(),]*$")


class CalculatorError(AgentwatchError, ValueError):
    """The expression is not plain arithmetic, or is too big to compute."""


class CalculatorArgs(BaseModel):
    expression: str = Field(
        description="An arithmetic expression, e.g. '123 + 456' or 'sqrt(2) * (3 + 4) ** 2'",
        max_length=MAX_EXPRESSION_CHARS * 4,
    )


def _digits(value: float) -> float:
    return math.log10(abs(value)) if value else 0.0


def _power(base: Any, exponent: Any) -> Any:
    if abs(exponent) > MAX_EXPONENT or _digits(base) * abs(exponent) > MAX_RESULT_DIGITS:
        raise CalculatorError(
            f"the power is too large (results are limited to {MAX_RESULT_DIGITS} digits)"
        )
    return operator.pow(base, exponent)


def _checked(op: Any) -> Any:
    def apply(a: Any, b: Any) -> Any:
        if _digits(a) + _digits(b) > MAX_RESULT_DIGITS:
            raise CalculatorError(f"the result would exceed {MAX_RESULT_DIGITS} digits")
        return op(a, b)

    return apply


_OPERATORS: Final = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _checked(operator.mul),
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_FUNCTIONS: Final = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
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
_NAMES: Final = {"pi": math.pi, "e": math.e}


def evaluate(expression: str) -> str:
    """The value of ``expression`` as text, or ``CalculatorError`` saying why not."""
    text = expression.strip().lower()
    if not text:
        raise CalculatorError("the expression is empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    if not _ALLOWED_CHARS.match(text) or "__" in text:
        raise CalculatorError(
            "only numbers, + - * / // % ** ^, parentheses and "
            f"{', '.join(sorted(_FUNCTIONS))}, pi, e are allowed"
        )
    evaluator = simpleeval.SimpleEval(
        operators=_OPERATORS, functions=_FUNCTIONS, names=_NAMES, allowed_attrs={}
    )
    try:
        value = evaluator.eval(text.replace("^", "**"))
    except CalculatorError:
        raise
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except (simpleeval.NameNotDefined, simpleeval.FunctionNotDefined) as exc:
        raise CalculatorError(
            f"unknown name {getattr(exc, 'name', None) or getattr(exc, 'func_name', '?')!r}"
        ) from None
    except (OverflowError, simpleeval.NumberTooHigh):
        raise CalculatorError("the number is too large") from None
    except (SyntaxError, simpleeval.InvalidExpression, TypeError, ValueError) as exc:
        raise CalculatorError(f"not a valid arithmetic expression ({type(exc).__name__})") from None
    except RecursionError:
        raise CalculatorError("the expression is nested too deeply") from None
    return _format(value)


def _format(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CalculatorError("the expression does not evaluate to a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CalculatorError("the result is not a finite number")
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.12g}"
    return str(value)


async def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return evaluate(expression)
