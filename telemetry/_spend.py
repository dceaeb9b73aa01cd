"""``Spend``: what an agent run or a batch task has cost so far, carried in the context.

An agent run's and a batch task's invocation put their ``Spend`` in the OpenTelemetry
context they make current (and in ``invocation.context``, for children started
elsewhere), so every ``chat`` call beneath them, in whatever task LangGraph runs it,
adds its cost to each enclosing total: the call's run, and the run's batch task.
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry.context import Context

_KEY = otel_context.create_key("agentwatch.spend")


class Spend:
    """The cost of the calls beneath one run or task (USD), and of those unpriced."""

    __slots__ = ("agent", "budget_usd", "cost_usd", "parent", "priced_calls", "unpriced_calls")

    def __init__(
        self, *, agent: str = "", budget_usd: float | None = None, parent: Spend | None = None
    ) -> None:
        self.agent = agent  # the agent label of its calls' cost ("" outside a run)
        self.budget_usd = budget_usd
        self.parent = parent
        self.cost_usd = 0.0
        self.priced_calls = 0
        self.unpriced_calls = 0

    def add(self, cost_usd: float | None) -> None:
        """One billed call: its cost, or None when it could not be priced."""
        spend: Spend | None = self
        while spend is not None:  # bounded: a run inside a task, a task inside nothing
            if cost_usd is None:
                spend.unpriced_calls += 1
            else:
                spend.cost_usd += cost_usd
                spend.priced_calls += 1
            spend = spend.parent

    @property
    def total_usd(self) -> float | None:
        """The cost of the priced calls; None when there were calls and none was priced
        (an unknown price is not a price of 0)."""
        if self.unpriced_calls and not self.priced_calls:
            return None
        return self.cost_usd

    @property
    def exhausted(self) -> bool:
        """Whether the budget (if any) is spent."""
        return self.budget_usd is not None and self.cost_usd >= self.budget_usd


def current_spend(context: Context | None = None) -> Spend | None:
    """The innermost ``Spend`` in ``context`` (default: the current one)."""
    spend = otel_context.get_value(_KEY, context)
    return spend if isinstance(spend, Spend) else None


def with_spend(spend: Spend, context: Context) -> Context:
    return otel_context.set_value(_KEY, spend, context)
