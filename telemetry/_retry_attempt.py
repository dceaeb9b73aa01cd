"""``retry_attempt {operation}``: one attempt of a retried call, and the retry counts.

The counts (``agentwatch_retry_attempts_total{outcome}``) and waits
(``agentwatch_retry_backoff_seconds``) are recorded by ``RetryMeter.count``
(``telemetry.retries``), once per attempt, by the retry loop that knows the outcome;
every attempt is counted, the first one too, which has a span only when it failed.
The span shows the attempt in the trace with its number, the wait before it and the
error it ended with.
"""

from __future__ import annotations

from opentelemetry.context import Context

from . import names as n
from ._invocation import Invocation
from ._recorder import Recorder


class RetryAttemptInvocation(Invocation):
    __slots__ = ()

    def __init__(
        self,
        recorder: Recorder,
        operation: str,
        attempt: int,
        wait_before: float,
        *,
        parent: Context | None = None,
        start_time_ns: int | None = None,
        started_at: float | None = None,
    ) -> None:
        super().__init__(
            recorder.tracer,
            recorder.clock,
            f"{n.SPAN_RETRY_ATTEMPT} {operation}",
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


class RetryMeter:
    """The counts of every attempt of a retried call: ``telemetry.retries``."""

    __slots__ = ("_recorder",)

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def count(self, operation: str, outcome: str, wait: float | None = None) -> None:
        """One attempt of ``operation`` ended with ``outcome`` (``n.RETRY_SUCCESS``,
        ``n.RETRY_RETRY``, ``n.RETRY_GIVEUP``); ``wait``: the backoff before the next."""
        r = self._recorder
        op = r.operations(operation)
        r.child(r.metrics.retry_attempts, op, outcome).inc()
        if wait is not None:
            r.child(r.metrics.retry_backoff, op).observe(wait)
