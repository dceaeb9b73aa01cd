"""``/v1/batches``: submit a batch (202), read its summary and its results, cancel it.

Every batch route is here (``add_batch_routes``), handlers and logic; an error is an
``ApiError`` (runtime/http/jsonpolicy.py), answered as JSON by the app's middleware. A
batch's state is one of ``BATCH_STATES`` (the OpenAPI document's enum is this tuple).

``GET /v1/batches/{id}`` is a summary (state, counts by status, times), never the task
list: its size does not grow with the batch. ``GET /v1/batches/{id}/results?limit=&cursor=``
gives the tasks that ended, in the order they ended, ``limit`` a page (default 100, at
most 1,000). Results only ever append, so following ``next_cursor`` (opaque) yields each
task's result exactly once, even while the batch runs (a page may then be empty: ask
again later); ``next_cursor`` is null once the batch has ended and every result was given.
The pages read the batch's result sink (a ``PagedResultSink``: ``MemoryResultSink``),
to which the processor adds each task's record as it ends.
A page of more than ``INLINE_PAGE_RESULTS`` results is encoded in a worker thread.
``DELETE /v1/batches/{id}`` answers 202 ``cancelling`` while the batch runs, and 200 with
its summary (its real state) once it has ended. Query parameters: only the route's, each
at most once (``query_params``); anything else is 422.

Limits per process (``RuntimeSettings``): at most ``max_running_batches`` batches running
and ``max_batch_queued_tasks`` tasks not yet ended across them. A batch past either is
refused with 429 and ``Retry-After`` (checked before the body is read, and again with its
size); a batch larger than the queued-task limit on its own can never run here: 413.
Finished batches stay readable, oldest dropped first, while there are more than
``KEEP_BATCHES`` batches or their tasks number more than ``max_batch_kept_tasks`` (the
newest finished batch is always kept).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

from aiohttp import web
from multidict import MultiMapping

from agentwatch.telemetry import Telemetry
from agentwatch.telemetry import names as n

from ..batch.memory_sink import MemoryResultSink
from ..batch.processor import BatchOptions, BatchProcessor
from ..batch.sink import PagedResultSink
from ..batch.task import BatchInputError, Task, TaskStatus, check_unique, task_from
from ..budget import budget_from
from ..http.jsonpolicy import ApiError, read_json
from ..settings import RuntimeSettings
from .redis_batches import RedisBatches, redis_batches
from .state import MAX_ID_CHARS, RUNTIME_KEY, SETTINGS_KEY

# A batch's state: running until its runner ends, then how it ended.
RUNNING: Final = "running"
FINISHED: Final = "finished"
CANCELLED: Final = n.CANCELLED
FAILED: Final = "failed"
ENDED_STATES: Final = (FINISHED, CANCELLED, FAILED)
BATCH_STATES: Final = (RUNNING, *ENDED_STATES)
CANCELLING: Final = "cancelling"  # DELETE's answer while it runs: not a state of its own

BATCH_FIELDS: Final = frozenset({"tasks", "workers", "timeout", "budget_usd"})
MAX_TASKS: Final = 10_000
MAX_WORKERS: Final = 64
KEEP_BATCHES: Final = 64
PAGE_DEFAULT: Final = 100
PAGE_MAX: Final = 1_000
INLINE_PAGE_RESULTS: Final = 50  # a longer page is encoded in a worker thread
RETRY_AFTER_SECONDS: Final = 5  # a hint: batches take seconds to minutes to free room


@dataclass(eq=False)
class BatchRecord:
    processor: BatchProcessor
    runner: asyncio.Task[Any]
    total: int
    sink: PagedResultSink  # the records of the tasks that ended, in the order they ended
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None  # set when the runner is done (its done callback)
    budget_warning: str | None = None  # why its budget cannot stop its calls (unpriced)
    _final_counts: dict[str, int] | None = None

    @property
    def batch_id(self) -> str:
        return self.processor.batch_id

    @property
    def running(self) -> bool:
        return self.finished_at is None

    @property
    def unfinished(self) -> int:
        """Tasks waiting or running (what counts against ``max_batch_queued_tasks``)."""
        return self.total - self.sink.count() if self.running else 0

    @property
    def state(self) -> str:
        if self.running:
            return RUNNING
        if self.runner.cancelled():
            return CANCELLED
        return FAILED if self.runner.exception() is not None else FINISHED

    def counts(self) -> dict[str, int]:
        if self._final_counts is not None:
            return self._final_counts
        tasks = self.processor.tasks  # filled when the runner starts
        counts = Counter(str(t.status) for t in tasks.values())
        if len(tasks) < self.total:
            counts[str(TaskStatus.PENDING)] += self.total - len(tasks)
        return dict(counts)

    def finish(self) -> None:
        self.finished_at = time.time()
        self._final_counts = self.counts()

    def view(self) -> dict[str, Any]:
        """The summary: its size does not depend on the number of tasks."""
        return {
            "id": self.batch_id,
            "state": self.state,
            "total": self.total,
            "done": self.sink.count(),
            "counts": self.counts(),
            "created_at": _timestamp(self.created_at),
            "finished_at": None if self.finished_at is None else _timestamp(self.finished_at),
            "results_url": f"/v1/batches/{self.batch_id}/results",
            "cost_usd": self.processor.total_usd,  # so far; null: none of it priced
            "unpriced_calls": self.processor.unpriced_calls,
            "budget_usd": self.processor.options.budget_usd,
            "budget_exceeded": self.processor.budget_exceeded,
            "budget_warning": self.budget_warning,
        }

    async def results(self, query: Mapping[str, str]) -> dict[str, Any]:
        """One page of the results from ``?cursor=`` (default: the first), ``?limit=``."""
        limit = _limit(query.get("limit"))
        start = 0 if query.get("cursor") is None else self._offset(query["cursor"])
        page = await self.sink.page(start, limit)
        end = start + len(page)
        more = end < self.sink.count() or self.running  # read after the page: never short
        return {
            "id": self.batch_id,
            "state": self.state,
            "results": page,
            "next_cursor": _cursor(self.batch_id, end) if more else None,
        }

    def _offset(self, cursor: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
            offset, batch_id = raw.split(":", 1)
            if batch_id == self.batch_id and offset.isdigit() and int(offset) <= self.sink.count():
                return int(offset)
        except (ValueError, binascii.Error):
            pass
        raise ApiError(422, "invalid_cursor", "'cursor' is not a next_cursor of this batch.")


def query_params(query: MultiMapping[str], allowed: frozenset[str]) -> dict[str, str]:
    """The query parameters of a batch route: one policy for all of them, an unknown or
    repeated parameter is refused (422 invalid_request), never ignored."""
    unknown = {name for name in query if name not in allowed}
    if unknown:
        names = ", ".join(sorted(name[:40] for name in unknown)[:10])
        raise ApiError(422, "invalid_request", f"Unknown parameters: {names}.")
    repeated = sorted({name for name in query if len(query.getall(name)) > 1})
    if repeated:
        raise ApiError(
            422, "invalid_request", f"Parameters given more than once: {', '.join(repeated)}."
        )
    return {name: query[name] for name in query}


_NONE: Final[frozenset[str]] = frozenset()
_PAGE: Final = frozenset({"limit", "cursor"})


async def post_batch(request: web.Request) -> web.Response:
    """``POST /v1/batches``: admit, parse and start a batch; 202 with its id and url."""
    settings = request.app[SETTINGS_KEY]
    agent = request.app[RUNTIME_KEY].agent
    admit_batch(request.app, settings)  # 429 before reading the body when full
    body = await read_json(request, settings.max_body_bytes, BATCH_FIELDS)
    room = partial(admit_batch, request.app, settings)  # 429 before parsing tasks
    tasks, options = parse_batch(body, room)
    warning = agent.unpriced_budget() if options.budget_usd is not None else None
    on_redis = request.app.get(REDIS_BATCHES_KEY)
    if on_redis is not None:  # any replica runs and answers it (redis_batches.py)
        batch_id, state = await on_redis.submit(tasks, options, warning), RUNNING
    else:

        async def work(task: Task) -> dict[str, Any]:
            # A run of a batch: it may take only part of the run slots (runtime/admission.py).
            return (await agent.arun(task.query, batch=True)).to_dict()

        record = start_batch(request.app, agent.telemetry, work, tasks, options, settings)
        record.budget_warning = warning
        batch_id, state = record.batch_id, record.state
    answer = {"id": batch_id, "state": state, "url": f"/v1/batches/{batch_id}"}
    if warning:
        answer["budget_warning"] = warning
    return web.json_response(answer, status=202)


def _record(request: web.Request) -> BatchRecord:
    """The batch of the route's ``{batch_id}``, or 404."""
    record = request.app[BATCHES_KEY].get(request.match_info["batch_id"])
    if record is None:
        raise ApiError(404, "not_found", "No such batch.")
    return record


async def get_batch(request: web.Request) -> web.Response:
    """``GET /v1/batches/{id}``: the summary (no parameters)."""
    on_redis = request.app.get(REDIS_BATCHES_KEY)
    if on_redis is None:
        record = _record(request)
        query_params(request.query, _NONE)
        return web.json_response(record.view())
    query_params(request.query, _NONE)
    return web.json_response(_found(await on_redis.view(request.match_info["batch_id"])))


def _found(answer: dict[str, Any] | None) -> dict[str, Any]:
    if answer is None:
        raise ApiError(404, "not_found", "No such batch.")
    return answer


async def get_batch_results(request: web.Request) -> web.Response:
    """``GET /v1/batches/{id}/results``: one page. A page of more than INLINE_PAGE_RESULTS
    results is encoded in a worker thread, one page at a time, so that many readers of
    big pages never hold the event loop (40 pages of 1,000 held /healthz 0.5 s)."""
    on_redis = request.app.get(REDIS_BATCHES_KEY)
    if on_redis is None:
        page = await _record(request).results(query_params(request.query, _PAGE))
    else:
        query = query_params(request.query, _PAGE)
        batch_id = request.match_info["batch_id"]
        page = _found(await on_redis.results(batch_id, query, _limit(query.get("limit"))))
    if len(page["results"]) <= INLINE_PAGE_RESULTS:
        return web.json_response(page)
    async with request.app[ENCODING_KEY]:
        body = await asyncio.to_thread(_encode, page)
    return web.Response(body=body, content_type="application/json")


async def delete_batch(request: web.Request) -> web.Response:
    """``DELETE /v1/batches/{id}``: 202 ``cancelling`` while it runs; once it has ended
    there is nothing to cancel: 200 with its summary (its real, final state)."""
    on_redis = request.app.get(REDIS_BATCHES_KEY)
    if on_redis is not None:
        query_params(request.query, _NONE)
        answer = _found(await on_redis.cancel(request.match_info["batch_id"]))
        return web.json_response(answer, status=202 if answer["state"] == CANCELLING else 200)
    record = _record(request)
    query_params(request.query, _NONE)
    if not record.running:
        return web.json_response(record.view())
    record.processor.cancel()
    return web.json_response({"id": record.batch_id, "state": CANCELLING}, status=202)


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def _limit(raw: str | None) -> int:
    if raw is None:
        return PAGE_DEFAULT
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 5 and 1 <= int(raw) <= PAGE_MAX):
        raise ApiError(422, "invalid_request", f"'limit' must be an integer 1-{PAGE_MAX}.")
    return int(raw)


def _cursor(batch_id: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{offset}:{batch_id}".encode()).decode().rstrip("=")


def _timestamp(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


BATCHES_KEY: Final = web.AppKey("agentwatch_batches", OrderedDict[str, BatchRecord])
ENCODING_KEY: Final = web.AppKey("agentwatch_batch_page_encoding", asyncio.Semaphore)
REDIS_BATCHES_KEY: Final = web.AppKey("agentwatch_redis_batches", RedisBatches)


def parse_batch(
    body: dict[str, Any], room: Callable[[int], None] | None = None
) -> tuple[list[Task], BatchOptions]:
    """The tasks and options of a batch request. ``room(n)`` (``admit_batch``) raises when
    n tasks do not fit now: it is asked before the tasks are parsed, so that refusing a
    batch costs little."""
    raw = body.get("tasks")
    if not isinstance(raw, list) or not raw:
        raise ApiError(422, "invalid_request", "'tasks' must be a non-empty array.")
    if len(raw) > MAX_TASKS:
        raise ApiError(413, "too_many_tasks", f"A batch holds at most {MAX_TASKS} tasks.")
    if room is not None:
        room(len(raw))
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
        raise ApiError(422, "invalid_tasks", str(exc)) from None
    workers, timeout = body.get("workers", 5), body.get("timeout")
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= MAX_WORKERS:
        raise ApiError(422, "invalid_request", f"'workers' must be an integer 1-{MAX_WORKERS}.")
    if timeout is not None and (
        isinstance(timeout, bool)  # true is not a number of seconds
        or not isinstance(timeout, int | float)
        or not 0 < timeout < float("inf")  # NaN and Infinity too
    ):
        raise ApiError(422, "invalid_request", "'timeout' must be a positive number of seconds.")
    try:
        budget = budget_from(body.get("budget_usd"))
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    long_ids = [task.id for task in tasks if len(task.id) > MAX_ID_CHARS]
    if long_ids:
        message = f"{len(long_ids)} task ids are longer than {MAX_ID_CHARS} characters."
        raise ApiError(422, "invalid_tasks", message)
    return tasks, BatchOptions(workers=workers, task_timeout=timeout, budget_usd=budget)


def admit_batch(app: web.Application, settings: RuntimeSettings, tasks: int = 1) -> None:
    """Raise ``ApiError(429)`` with Retry-After when a batch of ``tasks`` does not fit now
    (``ApiError(413)`` when it never can). Called before the body is read (one task, to
    refuse cheaply when full) and by ``start_batch`` with the real size."""
    most = settings.max_batch_queued_tasks
    if tasks > most:
        raise ApiError(413, "too_many_tasks", f"This service holds at most {most} batch tasks.")
    running = [r for r in app[BATCHES_KEY].values() if r.running]
    retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if len(running) >= settings.max_running_batches:
        message = f"{len(running)} batches are running, the most this service runs at once."
        raise ApiError(429, "too_many_batches", f"{message} Retry later.", headers=retry)
    queued = sum(r.unfinished for r in running)
    if queued + tasks > most:
        message = f"{queued} batch tasks are waiting or running; {tasks} more would pass {most}."
        raise ApiError(429, "too_many_queued_tasks", f"{message} Retry later.", headers=retry)


def start_batch(
    app: web.Application,
    telemetry: Telemetry,
    work: Callable[[Task], Any],
    tasks: list[Task],
    options: BatchOptions,
    settings: RuntimeSettings,
) -> BatchRecord:
    """Admit (``admit_batch``) and start a batch; drop the oldest finished ones."""
    admit_batch(app, settings, len(tasks))
    batches = app[BATCHES_KEY]
    sink = MemoryResultSink()
    processor = BatchProcessor(work, telemetry, options, sink=sink)
    runner = asyncio.get_running_loop().create_task(
        processor.run(tasks), name=f"batch-{processor.batch_id}"
    )
    record = batches[processor.batch_id] = BatchRecord(processor, runner, len(tasks), sink)
    keep = settings.max_batch_kept_tasks

    def finished(task: asyncio.Task[Any]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warning
        record.finish()
        _drop_old(batches, keep)

    runner.add_done_callback(finished)
    _drop_old(batches, keep)
    return record


def _drop_old(batches: OrderedDict[str, BatchRecord], keep_tasks: int) -> None:
    """Drop the oldest finished batches past KEEP_BATCHES or ``keep_tasks`` tasks."""
    finished = [r for r in batches.values() if not r.running]
    kept = sum(r.total for r in finished)
    while len(finished) > 1 and (len(batches) > KEEP_BATCHES or kept > keep_tasks):
        oldest = finished.pop(0)
        kept -= oldest.total
        del batches[oldest.batch_id]


async def batches_ctx(app: web.Application) -> AsyncIterator[None]:
    """Batches run as tasks of the service; shutting down cancels the unfinished ones.
    With ``AGENTWATCH_REDIS_URL``, batches live on Redis (redis_batches.py)."""
    app[BATCHES_KEY] = OrderedDict()
    app[ENCODING_KEY] = asyncio.Semaphore(1)  # get_batch_results: one big page at a time
    settings = app[SETTINGS_KEY]
    if settings.redis_url:
        agent = app[RUNTIME_KEY].agent
        async with redis_batches(
            settings.redis_url, agent.telemetry, agent, settings.redis_concurrency
        ) as on_redis:
            app[REDIS_BATCHES_KEY] = on_redis
            yield
        return
    yield
    running = [r.runner for r in app[BATCHES_KEY].values() if not r.runner.done()]
    for record in app[BATCHES_KEY].values():
        record.processor.cancel()
    if running:
        await asyncio.gather(*running, return_exceptions=True)


def add_batch_routes(app: web.Application) -> None:
    """The ``/v1/batches`` routes and their cleanup context. Call it after the runtime's
    context is added: the batches are cancelled and awaited before the runtime stops."""
    app.cleanup_ctx.append(batches_ctx)
    app.router.add_post("/v1/batches", post_batch)
    app.router.add_get("/v1/batches/{batch_id}", get_batch)
    app.router.add_get("/v1/batches/{batch_id}/results", get_batch_results)
    app.router.add_delete("/v1/batches/{batch_id}", delete_batch)
