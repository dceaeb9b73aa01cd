"""``batch_task``: one task of a batch, from a worker taking it to its end; and the
batch metrics no one task's span owns (``BatchMeter``: queue depth, tasks in progress,
tasks that ended unstarted; ``QueueMeter``: the batch queue on Redis).

A task that ends before any worker starts it (cancelled in the queue, or while waiting
for a concurrency slot) has no span and no work time, but is counted all the same:
``BatchMeter.unstarted`` keeps ``agentwatch_batch_tasks_total`` equal to the tasks that
ended.
"""

from __future__ import annotations

from opentelemetry.context import Context

from . import names as n
from ._invocation import Exemplar, Invocation
from ._recorder import Recorder
from ._spend import Spend, current_spend, with_spend

PRIORITIES = frozenset(str(p) for p in range(10))  # the closed set of priority labels


class BatchTaskInvocation(Invocation):
    """Records ``agentwatch_batch_tasks_total{status}`` and the task duration by status.

    The status (``n.BATCH_STATUSES``) is the processor's to decide: call
    ``finish(status, error)`` rather than ``stop()``/``fail()``.
    """

    __slots__ = ("_recorder", "_status", "spend")

    def __init__(
        self,
        recorder: Recorder,
        batch_id: str,
        task_id: str,
        priority: int,
        queue_wait: float,
        *,
        parent: Context | None = None,
    ) -> None:
        super().__init__(
            recorder.tracer,
            recorder.clock,
            n.SPAN_BATCH_TASK,
            {
                n.AGENTWATCH_BATCH_ID: batch_id,
                n.AGENTWATCH_TASK_ID: task_id,
                n.AGENTWATCH_TASK_PRIORITY: priority,
                n.AGENTWATCH_TASK_QUEUE_WAIT: queue_wait,
            },
            parent=parent,
        )
        self._recorder = recorder
        self._status = n.STATUS_COMPLETED
        self.spend = Spend(parent=current_spend(parent))  # what the task's calls cost
        label = str(priority) if str(priority) in PRIORITIES else n.OTHER
        recorder.child(recorder.metrics.batch_queue_wait, label).observe(
            queue_wait, self.exemplar()
        )

    def _context(self) -> Context:
        return with_spend(self.spend, super()._context())

    def finish(self, status: str, error: BaseException | None = None) -> None:
        self._status = status
        if self.span.is_recording():
            self.span.set_attribute(n.AGENTWATCH_TASK_STATUS, status)
            if self.spend.priced_calls:
                self.span.set_attribute(n.AGENTWATCH_TASK_COST_AMOUNT, self.spend.cost_usd)
        self.end(error)

    def _record(self, duration: float, error_type: str, exemplar: Exemplar) -> None:
        r = self._recorder
        r.child(r.metrics.batch_tasks, self._status).inc()
        r.child(r.metrics.batch_task_duration, self._status).observe(duration, exemplar)


class BatchMeter:
    """The batch gauges and the count of unstarted tasks: ``telemetry.batches``.

    Both gauges are shared by every batch of the process: each batch adds and takes
    out only its own tasks.
    """

    __slots__ = ("_in_progress", "_queue_depth", "_recorder")

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._queue_depth = recorder.metrics.batch_queue_depth
        self._in_progress = recorder.metrics.batch_in_progress

    def queued(self, count: int) -> None:
        """``count`` tasks were put in the queue (``agentwatch_batch_queue_depth``)."""
        self._queue_depth.inc(count)

    def dequeued(self, count: int = 1) -> None:
        """``count`` tasks left the queue: taken by a worker, or removed unstarted."""
        self._queue_depth.dec(count)

    def started(self) -> None:
        """A worker started a task (``agentwatch_batch_tasks_in_progress``)."""
        self._in_progress.inc()

    def finished(self) -> None:
        """A started task ended, however it ended."""
        self._in_progress.dec()

    def unstarted(self, status: str = n.STATUS_CANCELLED, count: int = 1) -> None:
        """``count`` tasks ended with ``status`` before a worker started them (no span)."""
        r = self._recorder
        r.child(r.metrics.batch_tasks, status).inc(count)


class QueueMeter:
    """The batch queue on Redis, as one process sees it: ``telemetry.queue``.

    ``depth`` sets what was read from Redis (every worker reads the same queue: take
    the max across instances, not the sum); the counters count what this process did
    (sum across instances). The telemetry knows no Redis: the runtime reads and reports.
    """

    __slots__ = ("_dead_letters", "_pending", "_reclaims", "_retries", "_waiting")

    def __init__(self, recorder: Recorder) -> None:
        m = recorder.metrics
        self._waiting = m.redis_queue_tasks.labels(n.QUEUE_WAITING)
        self._pending = m.redis_queue_tasks.labels(n.QUEUE_PENDING)
        self._reclaims = m.redis_queue_reclaims
        self._dead_letters = m.redis_queue_dead_letters
        self._retries = m.redis_retries

    def depth(self, waiting: int, pending: int) -> None:
        """Tasks waiting in the queue and taken but not acknowledged, read from Redis."""
        self._waiting.set(waiting)
        self._pending.set(pending)

    def reclaimed(self, count: int = 1) -> None:
        """Tasks taken again after their worker went quiet."""
        self._reclaims.inc(count)

    def dead_lettered(self, count: int = 1) -> None:
        """Tasks ended as failed after too many deliveries."""
        self._dead_letters.inc(count)

    def retried(self) -> None:
        """A Redis call failed and will be tried again after a backoff."""
        self._retries.inc()
