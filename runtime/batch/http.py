"""``/v1/batches``: submit a batch (202), read its progress and results, cancel it."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from agentwatch.telemetry import Telemetry

from .processor import BatchOptions, BatchProcessor
from .task import BatchInputError, Task, check_unique, task_from

MAX_TASKS: Final = 10_000
MAX_WORKERS: Final = 64
KEEP_BATCHES: Final = 64


@dataclass
class BatchRecord:
    processor: BatchProcessor
    runner: asyncio.Task[Any]

    @property
    def state(self) -> str:
        if not self.runner.done():
            return "running"
        if self.runner.cancelled():
            return "cancelled"
        return "failed" if self.runner.exception() is not None else "finished"

    def view(self) -> dict[str, Any]:
        tasks = self.processor.tasks.values()
        counts: dict[str, int] = {}
        for task in tasks:
            counts[str(task.status)] = counts.get(str(task.status), 0) + 1
        return {
            "id": self.processor.batch_id,
            "state": self.state,
            "counts": counts,
            "results": [t.record() for t in tasks if t.status in _SHOWN],
        }


_SHOWN = frozenset({"completed", "failed", "timed_out", "cancelled"})
BATCHES_KEY: Final = web.AppKey("agentwatch_batches", OrderedDict[str, BatchRecord])

ApiErrorFactory = Callable[[int, str, str], Exception]


def parse_batch(body: dict[str, Any], error: ApiErrorFactory) -> tuple[list[Task], BatchOptions]:
    raw = body.get("tasks")
    if not isinstance(raw, list) or not raw:
        raise error(422, "invalid_request", "'tasks' must be a non-empty array.")
    if len(raw) > MAX_TASKS:
        raise error(413, "too_many_tasks", f"A batch holds at most {MAX_TASKS} tasks.")
    tasks, problems = [], []
    for index, item in enumerate(raw):
        try:
            tasks.append(task_from(item))
        except ValueError as exc:
            problems.append(f"tasks[{index}]: {exc}")
    try:
        if problems:
            raise BatchInputError(problems)
        tasks = check_unique(tasks)
    except BatchInputError as exc:
        raise error(422, "invalid_tasks", str(exc)) from None
    workers, timeout = body.get("workers", 5), body.get("timeout")
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= MAX_WORKERS:
        raise error(422, "invalid_request", f"'workers' must be an integer 1-{MAX_WORKERS}.")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise error(422, "invalid_request", "'timeout' must be a positive number of seconds.")
    return tasks, BatchOptions(workers=workers, task_timeout=timeout)


def start_batch(
    app: web.Application,
    telemetry: Telemetry,
    work: Callable[[Task], Any],
    tasks: list[Task],
    options: BatchOptions,
) -> BatchRecord:
    batches = app[BATCHES_KEY]
    processor = BatchProcessor(work, telemetry, options)
    runner = asyncio.get_running_loop().create_task(
        processor.run(tasks), name=f"batch-{processor.batch_id}"
    )
    record = batches[processor.batch_id] = BatchRecord(processor, runner)
    runner.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieve, no warning
    finished = [k for k, r in batches.items() if r.runner.done()]
    while len(batches) > KEEP_BATCHES and finished:
        batches.pop(finished.pop(0))
    return record


async def batches_ctx(app: web.Application) -> AsyncIterator[None]:
    """Batches run as tasks of the service; shutting down cancels the unfinished ones."""
    app[BATCHES_KEY] = OrderedDict()
    yield
    running = [r.runner for r in app[BATCHES_KEY].values() if not r.runner.done()]
    for record in app[BATCHES_KEY].values():
        record.processor.cancel()
    if running:
        await asyncio.gather(*running, return_exceptions=True)
