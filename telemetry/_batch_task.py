"""``batch_task``: one task of a batch, from a worker taking it to its end.

A task that ends before any worker starts it (cancelled in the queue, or while waiting
for a concurrency slot) has no span and no work time, but is counted all the same:
``count_unstarted`` keeps ``agentwatch_batch_tasks_total`` equal to the tasks that ended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.context import Context

from . import names as n
from ._invocation import Exemplar, Invocation

if TYPE_CHECKING:
    from .core import Telemetry

SPAN_NAME = "batch_task"
PRIORITIES = frozenset(str(p) for p in range(10))  # the closed set of priority labels


class BatchTaskInvocation(Invocation):
    """Records ``agentwatch_batch_tasks_total{status}`` and the task duration by status.

    The status (completed, failed, timed_out, cancelled) is the processor's to decide:
    call ``finish(status, error)`` rather than ``stop()``/``fail()``.
    """

    __slots__ = ("_status", "_telemetry")

    def __init__(
        self,
        telemetry: Telemetry,
        batch_id: str,
        task_id: str,
        priority: int,
        queue_wait: float,
        *,
        parent: Context | None = None,
    ) -> None:
        super().__init__(
            telemetry.tracer,
            telemetry.clock,
            SPAN_NAME,
            {
                n.AGENTWATCH_BATCH_ID: batch_id,
                n.AGENTWATCH_TASK_ID: task_id,
                n.AGENTWATCH_TASK_PRIORITY: priority,
                n.AGENTWATCH_TASK_QUEUE_WAIT: queue_wait,
            },
            parent=parent,
        )
        self._telemetry = telemetry
        self._status = "completed"
        label = str(priority) if str(priority) in PRIORITIES else n.OTHER
        telemetry.child(telemetry.metrics.batch_queue_wait, label).observe(
            queue_wait, self.exemplar()
        )

    def finish(self, status: str, error: BaseException | None = None) -> None:
        self._status = status
        if self.span.is_recording():
            self.span.set_attribute(n.AGENTWATCH_TASK_STATUS, status)
        self.end(error)

    def _record(self, duration: float, error_type: str, exemplar: Exemplar) -> None:
        t = self._telemetry
        t.child(t.metrics.batch_tasks, self._status).inc()
        t.child(t.metrics.batch_task_duration, self._status).observe(duration, exemplar)


def count_unstarted(telemetry: Telemetry, status: str, count: int = 1) -> None:
    """Count ``count`` tasks that ended with ``status`` before a worker started them."""
    telemetry.child(telemetry.metrics.batch_tasks, status).inc(count)
