"""``retry_attempt {operation}``: one attempt of a retried call.

The counts (``agentwatch_retry_attempts_total{outcome}``) and waits
(``agentwatch_retry_backoff_seconds``) are recorded by ``Telemetry.count_retry``, once per
attempt, by the retry loop that knows the outcome; this span shows the attempt in the
trace with its number, the wait before it and the error it ended with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.context import Context

from . import names as n
from ._invocation import Invocation

if TYPE_CHECKING:
    from .core import Telemetry

SPAN_PREFIX = "retry_attempt"


class RetryAttemptInvocation(Invocation):
    __slots__ = ()

    def __init__(
        self,
        telemetry: Telemetry,
        operation: str,
        attempt: int,
        wait_before: float,
        *,
        parent: Context | None = None,
        start_time_ns: int | None = None,
        started_at: float | None = None,
    ) -> None:
        super().__init__(
            telemetry.tracer,
            telemetry.clock,
            f"{SPAN_PREFIX} {operation}",
            {
                n.AGENTWATCH_OPERATION: operation,
                n.AGENTWATCH_RETRY_ATTEMPT: attempt,
                n.AGENTWATCH_RETRY_WAIT: wait_before,
            },
            parent=parent,
            start_time_ns=start_time_ns,
            started_at=started_at,
        )

    def set_outcome(self, outcome: str) -> None:
        if self.span.is_recording():
            self.span.set_attribute(n.AGENTWATCH_RETRY_OUTCOME, outcome)
