"""Run budgets: a run whose calls have cost its budget makes no more model calls.

A run's budget (``AGENTWATCH_RUN_BUDGET_USD``, or less for one run: ``Agent.arun(...,
budget_usd=)``, the ``budget_usd`` of ``POST /v1/runs``) travels with the run's ``Spend``
(telemetry) in the context. Every chat boundary asks ``check_budget()`` before it starts
a call: once the run has spent its budget the call is not made and the run ends with
``BudgetExceededError`` (HTTP 402 ``budget_exceeded``), its ``invoke_agent`` span failed
with that ``error.type``. The call that crossed the budget was made and is paid for; no
other span fails.
"""

from __future__ import annotations

import math
from typing import Final

from opentelemetry.context import Context

from agentwatch.telemetry import AgentwatchError, current_spend

BUDGET_EXCEEDED: Final = "budget_exceeded"  # the HTTP API's error type


class BudgetExceededError(AgentwatchError):
    """The run's budget is spent: it makes no more model calls."""

    def __init__(self, budget_usd: float, spent_usd: float) -> None:
        super().__init__(
            f"the run spent ${spent_usd:.6f} of its ${budget_usd:.6f} budget; "
            "it makes no more model calls"
        )
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd


def check_budget(context: Context | None = None) -> None:
    """Raise ``BudgetExceededError`` when a run (or task) enclosing ``context`` (default:
    the current one) has spent its budget."""
    spend = current_spend(context)
    while spend is not None:  # bounded: a run inside a task
        if spend.exhausted:
            assert spend.budget_usd is not None
            raise BudgetExceededError(spend.budget_usd, spend.cost_usd)
        spend = spend.parent


def run_budget(limit: float | None, asked: float | None) -> float | None:
    """A run's budget: what it asks (``asked``), never more than the ``limit``."""
    if asked is None:
        return limit
    return asked if limit is None else min(asked, limit)


def budget_from(value: object, name: str = "budget_usd") -> float | None:
    """A budget a request gives (JSON): None, or a positive finite number of USD;
    anything else is a ``ValueError`` naming ``name``."""
    if value is None:
        return None
    if (
        isinstance(value, bool)  # true is no amount
        or not isinstance(value, int | float)
        or not 0 < value < math.inf  # NaN and Infinity too
    ):
        raise ValueError(f"'{name}' must be a positive amount of USD.")
    return float(value)
