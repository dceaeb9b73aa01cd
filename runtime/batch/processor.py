"""``BatchProcessor``: a priority queue, N workers, a concurrency limit, per-task timeouts.

Lower priority numbers run first, first-in first-out within a priority. Each task a
worker starts is a ``batch_task`` span under one ``batch`` span, and the
``agentwatch_batch_*`` metrics move live: queue depth and tasks in progress (gauges),
queue wait by priority, outcomes and work time by status (a task cancelled before it
started is counted, with no span and no work time).

Results go to a ``ResultSink`` (sink.py; by default a ``MemoryResultSink``): a task
is reported done (``on_progress``) only once the sink's ``add`` of its record returned,
and tasks whose record the sink already holds with a final status are skipped. With the
JSONL file (``JsonlResultSink``) a batch killed part-way and started again ends with
each task's result exactly once in the file. Execution is at-least-once: a task whose
record had not reached the file when the process died runs again on resume; that is at
most the tasks the workers held (running, or finished and waiting for their record's
sync), because a worker takes its next task only once its record is durable. With
``retry_failed`` the failed and timed-out tasks of the sink run again too, and their new
record supersedes the old. An ``add`` that fails stops the batch (``run()`` raises it).

Cost: each task's record holds what its model calls cost (``cost_usd``, from its
``batch_task`` span's ``Spend``: a failed task's billed calls too). With a budget
(``BatchOptions.budget_usd``), once the batch's tasks — those already in the sink
included — have cost that much it drains: no task starts any more, the running ones
finish, the rest end ``cancelled`` (not final: a later run with a larger budget runs
them), and the summary says ``budget_exceeded``. A task run again (retried)
keeps its earlier attempts' cost: its record's ``cost_usd`` and the batch's total
include it. Calls that could not be priced are counted
(``unpriced_calls``); when none was priced the total is unknown (``total_usd`` None),
never 0, and a budget cannot stop them.

``drain()`` (wired to SIGTERM/SIGINT by the CLI) stops taking tasks and lets the running
ones finish or time out; ``cancel()`` stops one task or all of them, whether queued,
waiting for a concurrency slot or running. Cancelling ``run()`` itself ends every span
and leaves every unfinished task ``cancelled``.

Where tasks come from is the queue: ``run(tasks)`` puts them in the processor's own
priority queue; ``serve(source)`` takes them from a ``TaskSource`` instead (another
process's queue: redis_queue.py), each ``Taken`` task carrying its own batch id, trace
parent, timeout and the sink its record goes to. Both go through the same workers,
slots, spans, timeouts and statuses.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.context import Context

from agentwatch.telemetry import Telemetry
from agentwatch.telemetry.names import AGENTWATCH_BATCH_ID, SPAN_BATCH

from .memory_sink import MemoryResultSink
from .sink import Record, RecordTooLarge, ResultSink
from .task import FINAL, RETRYABLE, Task, TaskStatus, check_unique

Work = Callable[[Task], Awaitable[Any]]
Progress = Callable[[Task], None]


MAX_WORKERS = 10_000  # a worker is an asyncio task: more would only cost memory


@dataclass(slots=True)
class Taken:
    """A task a worker took, with what it runs under. ``key`` is unique among the tasks
    the processor holds (the task id for its own queue; tasks served from a source may
    share ids across batches). ``enqueued_at`` is on the processor's clock."""

    task: Task
    key: str
    batch_id: str
    enqueued_at: float
    sink: ResultSink
    parent: Context | None = None
    timeout: float | None = None


class TaskSource(Protocol):
    """Where ``serve()``'s workers take tasks from (another process's queue)."""

    async def take(self) -> Taken | None:
        """The next task, waiting for one; None once the source stops (``stop()``)."""
        ...

    def stop(self) -> None:
        """Hand out no more tasks: every ``take`` returns None from now on."""
        ...


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """How a batch runs. At most ``min(workers, tasks to run)`` workers are started."""

    workers: int = 5
    concurrency: int | None = None  # at most this many tasks at once (default: workers)
    task_timeout: float | None = None
    retry_failed: bool = False  # run failed / timed-out tasks of the results file again
    # USD: once the batch's tasks have cost this much, no more tasks start (the running
    # ones finish); the rest stay unrun (cancelled, not recorded) for a later run.
    budget_usd: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(
                f"workers must be at most {MAX_WORKERS} (and at least 1), got {self.workers}"
            )
        if self.concurrency is not None and not 1 <= self.concurrency <= self.workers:
            raise ValueError(
                f"concurrency must be 1 to workers ({self.workers}), got {self.concurrency}: "
                "no more tasks run at once than workers take"
            )
        if self.task_timeout is not None and not self.task_timeout > 0:
            raise ValueError("task_timeout must be positive")
        if self.budget_usd is not None and not 0 < self.budget_usd < math.inf:
            raise ValueError(f"budget_usd must be a positive amount, got {self.budget_usd}")


@dataclass(slots=True)
class BatchSummary:
    batch_id: str
    counts: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # already in the results file
    retried: int = 0  # in the file as failed / timed out, run again (retry_failed)
    wall_time: float = 0.0
    durations: list[float] = field(default_factory=list)
    # what the batch's tasks cost, USD: those run now and those already in the results
    # (their recorded cost); the budget is measured against it
    cost_usd: float = 0.0
    budget_exceeded: bool = False  # tasks were left unrun because the budget was spent
    priced: bool = False  # some cost is known (a priced call, or a recorded cost)
    unpriced_calls: int = 0  # model calls that could not be priced (this run's)

    @property
    def total_usd(self) -> float | None:
        """``cost_usd``, or None when calls were made and none could be priced (an
        unknown price is not a price of 0)."""
        return None if self.unpriced_calls and not self.priced else self.cost_usd

    def percentile(self, q: float) -> float:
        if not self.durations:
            return 0.0
        ordered = sorted(self.durations)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class BatchProcessor:
    def __init__(
        self,
        work: Work,
        telemetry: Telemetry,
        options: BatchOptions | None = None,
        *,
        sink: ResultSink | None = None,
        store: ResultSink | None = None,
        on_progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
        batch_id: str | None = None,
    ) -> None:
        """``sink``: where the results go (default: a new ``MemoryResultSink``);
        ``store`` is its first name, still accepted."""
        if sink is not None and store is not None:
            raise TypeError("give sink or store (its first name), not both")
        self.work = work
        self.telemetry = telemetry
        self.options = options or BatchOptions()
        self.sink: ResultSink = (
            sink if sink is not None else store if store is not None else MemoryResultSink()
        )
        self.on_progress = on_progress
        self.clock = clock
        self.batch_id = batch_id or uuid.uuid4().hex[:16]
        self.tasks: dict[str, Task] = {}
        self._queue: asyncio.PriorityQueue[tuple[int, int, float, Task]] = asyncio.PriorityQueue()
        # task id -> the worker holding it: waiting for a slot, or running it
        self._waiting: dict[str, asyncio.Task[Any]] = {}
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._cancelled: set[str] = set()
        self._added: set[str] = set()  # ids whose record went to the sink in this run
        self._draining = False
        self._torn_down = False  # set when run() itself is cancelled or fails
        self.spent_usd = 0.0  # what the batch's tasks cost so far (see BatchSummary.cost_usd)
        self.budget_exceeded = False
        self.priced = False  # some cost is known (see BatchSummary.total_usd)
        self.unpriced_calls = 0
        self._semaphore = asyncio.Semaphore(self.options.concurrency or self.options.workers)
        self._order = itertools.count()
        self._source: TaskSource | None = None

    # -- control -----------------------------------------------------------------------
    def drain(self) -> None:
        """Take no more tasks (nor start those waiting for a slot); the running ones
        finish (or time out)."""
        self._draining = True
        if self._source is not None:
            self._source.stop()
        self._cancel_queued()
        for task_id in list(self._waiting):
            self.cancel(task_id)

    def cancel(self, task_id: str | None = None) -> None:
        """Cancel one task (queued, waiting for a slot or running), or with no id all.
        A task served from a source is named by its ``Taken.key``."""
        if task_id is None:
            self.drain()
            for running_id in list(self._running):
                self.cancel(running_id)  # each worker records its task as cancelled
            return
        if task_id in self._cancelled:
            return
        self._cancelled.add(task_id)
        worker = self._waiting.get(task_id) or self._running.get(task_id)
        if worker is not None:
            worker.cancel()

    def _cancel_queued(self) -> None:
        removed = 0
        while not self._queue.empty():
            *_, task = self._queue.get_nowait()
            self._queue.task_done()
            removed += 1
            self._end_unstarted(task)
        self.telemetry.batches.dequeued(removed)  # the gauge is shared: only ours go

    # -- running -----------------------------------------------------------------------
    async def run(self, tasks: Iterable[Task]) -> BatchSummary:
        """Run ``tasks`` (ids unique, else nothing starts) and return the summary."""
        todo = check_unique(tasks)
        started = self.clock()
        done = await self.sink.open()
        try:
            summary = await self._run(todo, done)
        finally:
            await self.sink.close()
        summary.wall_time = self.clock() - started
        return summary

    async def _run(self, todo: list[Task], done: Mapping[str, Record]) -> BatchSummary:
        summary = BatchSummary(self.batch_id)
        self._enqueue(todo, done, summary)
        self._check_budget()  # spent by an earlier run: nothing more starts
        attributes = {AGENTWATCH_BATCH_ID: self.batch_id}
        with self.telemetry.start_operation(SPAN_BATCH, attributes) as batch:
            try:  # no worker when every task is already done
                await self._work(
                    min(self.options.workers, self._queue.qsize()), batch.context, summary
                )
            except BaseException:
                self._cancel_queued()
                with suppress(Exception):  # the batch failed already: run() raises that
                    await self._add_ended_without_a_worker()
                raise
            self._cancel_queued()  # drained before the workers started: nothing left waiting
            await self._add_ended_without_a_worker()
        summary.counts.clear()
        for task in self.tasks.values():
            summary.counts[str(task.status)] = summary.counts.get(str(task.status), 0) + 1
        summary.cost_usd, summary.budget_exceeded = self.spent_usd, self.budget_exceeded
        summary.priced, summary.unpriced_calls = self.priced, self.unpriced_calls
        return summary

    @property
    def total_usd(self) -> float | None:
        """What the batch's tasks cost so far; None when none of their calls was priced."""
        return None if self.unpriced_calls and not self.priced else self.spent_usd

    def _spent(self, cost_usd: float | None) -> None:
        if cost_usd is not None:
            self.spent_usd += cost_usd
            self.priced = True

    async def serve(self, source: TaskSource) -> BatchSummary:
        """Work tasks taken from ``source`` with ``options.workers`` workers until it stops
        (``drain()`` stops it). Each task runs as ``run()``'s do, in a ``batch_task`` span
        under the task's own parent, and its record goes to the task's own sink; the
        summary counts what ended here."""
        self._source = source
        summary = BatchSummary(self.batch_id)
        started = self.clock()
        await self._work(self.options.workers, None, summary)
        summary.wall_time = self.clock() - started
        return summary

    async def _work(self, count: int, context: Context | None, summary: BatchSummary) -> None:
        """``count`` workers until they are done; torn down together if one fails or this
        is cancelled."""
        workers = [
            asyncio.create_task(self._worker(context, summary), name=f"batch-worker-{i}")
            for i in range(count)
        ]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            self._torn_down = True  # cancelled from outside, or a result could not be added
            for worker in workers:
                worker.cancel()
            with suppress(BaseException):
                await asyncio.gather(*workers, return_exceptions=True)
            raise

    def _enqueue(self, todo: list[Task], done: Mapping[str, Record], summary: BatchSummary) -> None:
        now = self.clock()
        for task in todo:
            self.tasks[task.id] = task
            previous = done.get(task.id)
            if previous is not None:
                # money spent is spent: a task run again (retried) starts from its
                # earlier attempts' cost, and its record sums them
                task.cost_usd = _cost(previous.get("cost_usd"))
                self._spent(task.cost_usd)
            if previous is not None and previous.get("status") in FINAL:
                if self.options.retry_failed and previous["status"] in RETRYABLE:
                    summary.retried += 1
                else:
                    task.status = TaskStatus(previous["status"])
                    task.result, task.error = previous.get("result"), previous.get("error")
                    summary.skipped += 1
                    if self.on_progress is not None:
                        self.on_progress(task)
                    continue
            self._queue.put_nowait((task.priority, next(self._order), now, task))
        self.telemetry.batches.queued(self._queue.qsize())

    async def _worker(self, context: Context | None, summary: BatchSummary) -> None:
        while not self._draining:
            taken = await self._next(context)
            if taken is None:
                return
            await self._take(taken, summary)

    async def _next(self, context: Context | None) -> Taken | None:
        """The next task: from the source being served, else from the own queue."""
        if self._source is not None:
            return await self._source.take()
        try:
            _, _, enqueued_at, task = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        self._queue.task_done()
        self.telemetry.batches.dequeued()
        timeout = self.options.task_timeout
        return Taken(task, task.id, self.batch_id, enqueued_at, self.sink, context, timeout)

    async def _take(self, taken: Taken, summary: BatchSummary) -> None:
        """Wait for a concurrency slot (cancellable like a queued task), run, record."""
        task, key = taken.task, taken.key
        if key in self._cancelled:
            await self._unstarted(taken, summary)
            return
        worker = _current()
        self._waiting[key] = worker
        try:
            await self._semaphore.acquire()
        except asyncio.CancelledError:
            if not self._own_cancel(key, worker):
                self._end_unstarted(task)
                raise
            await self._unstarted(taken, summary)
            return
        finally:
            self._waiting.pop(key, None)
        try:
            await self._one(taken, summary)
        finally:
            self._semaphore.release()
        await self._report(taken, summary)  # outside the slot: no slot waits for a sync

    async def _unstarted(self, taken: Taken, summary: BatchSummary) -> None:
        """A task cancelled before it started: a served one's record goes back to its
        sink at once (the source's to requeue); the own queue's when the run ends."""
        self._end_unstarted(taken.task)
        if self._source is not None:
            summary.counts[TaskStatus.CANCELLED] = summary.counts.get(TaskStatus.CANCELLED, 0) + 1
            self._cancelled.discard(taken.key)
            await taken.sink.add(taken.task.record())

    async def _one(self, taken: Taken, summary: BatchSummary) -> None:
        """Run one task in its ``batch_task`` span, current while the work runs; the
        status is the processor's to decide, so the span ends with ``finish``."""
        task, key = taken.task, taken.key
        task.status = TaskStatus.PROCESSING
        worker = _current()
        self._running[key] = worker  # cancel(key) cancels this worker's await
        self.telemetry.batches.started()
        started = self.clock()
        invocation = self.telemetry.batch_task(
            taken.batch_id, task.id, task.priority, started - taken.enqueued_at, parent=taken.parent
        )
        with invocation:
            status, error = await self._attempt(taken)  # never raises
            invocation.finish(status, error)  # before the with's own end, which is then a no-op
        self.telemetry.batches.finished()
        self._running.pop(key, None)
        if self._source is None:  # a long-lived server keeps nothing per task
            summary.durations.append(self.clock() - started)
        spend = invocation.spend  # every billed call, a failed task's too
        self.unpriced_calls += spend.unpriced_calls
        cost = spend.total_usd
        if cost is not None:
            task.cost_usd = (task.cost_usd or 0.0) + cost  # with its earlier attempts'
            self._spent(cost)
        self._check_budget()
        self._settle(taken, status, error)
        if error is None or isinstance(error, Exception):
            return
        if isinstance(error, asyncio.CancelledError) and self._own_cancel(key, worker):
            return
        raise error  # the whole batch is being torn down (or the process is ending)

    async def _attempt(self, taken: Taken) -> tuple[TaskStatus, BaseException | None]:
        """Run the work under the task timeout; how it ended, with what. Never raises."""
        task = taken.task
        try:
            if taken.timeout is None:
                task.result = await self.work(task)
            else:
                async with asyncio.timeout(taken.timeout):
                    task.result = await self.work(task)
            taken.sink.check(task.record())  # too large to record: failed, here, not later
        except RecordTooLarge as exc:
            task.result = None
            return TaskStatus.FAILED, exc
        except TimeoutError as exc:
            return TaskStatus.TIMED_OUT, exc
        except Exception as exc:
            return TaskStatus.FAILED, exc
        except BaseException as exc:  # cancelled: this task alone, or the whole batch
            return TaskStatus.CANCELLED, exc
        return TaskStatus.COMPLETED, None

    def _check_budget(self) -> None:
        """The budget spent: take no more tasks (as ``drain``); the running ones finish."""
        budget = self.options.budget_usd
        if budget is None or self.spent_usd < budget or self._draining:
            return
        self.budget_exceeded = True
        self.drain()

    def _own_cancel(self, key: str, worker: asyncio.Task[Any]) -> bool:
        """True when the cancellation is ``cancel(key)`` alone: the worker goes on."""
        if key not in self._cancelled or self._torn_down:
            return False
        return worker.uncancel() == 0

    def _settle(self, taken: Taken, status: TaskStatus, error: BaseException | None) -> None:
        task = taken.task
        task.status = status
        if status is TaskStatus.FAILED and error is not None:
            task.error = f"{type(error).__name__}: {error}"[:2000]
        elif status is TaskStatus.TIMED_OUT:
            task.error = f"timed out after {taken.timeout:g} s"

    async def _report(self, taken: Taken, summary: BatchSummary) -> None:
        """Add a task's record to its sink (durable once that returns), then report it."""
        task = taken.task
        summary.counts[str(task.status)] = summary.counts.get(str(task.status), 0) + 1
        if self._source is None:
            self._added.add(taken.key)
        else:  # a long-lived server keeps nothing per task it is done with
            self._cancelled.discard(taken.key)
        await taken.sink.add(task.record())
        if self.on_progress is not None:
            self.on_progress(task)

    async def _add_ended_without_a_worker(self) -> None:
        """Tasks that ended outside a worker's report (cancelled before they started, or
        when the batch was torn down) go to the sink last, in batch order."""
        for task in self.tasks.values():  # bounded: each task once
            if task.status is TaskStatus.CANCELLED and task.id not in self._added:
                self._added.add(task.id)
                await self.sink.add(task.record())

    def _end_unstarted(self, task: Task) -> None:
        """A task that ends before a worker starts it: cancelled, counted, reported (its
        record goes to the sink when the run ends)."""
        task.status = TaskStatus.CANCELLED
        self.telemetry.batches.unstarted(TaskStatus.CANCELLED)
        if self.on_progress is not None:
            self.on_progress(task)


def _cost(value: Any) -> float | None:
    """A recorded ``cost_usd`` (a results file from before costs were recorded: None)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _current() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    assert task is not None, "the batch runs inside asyncio tasks"
    return task
