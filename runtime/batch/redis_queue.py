"""The batch queue on Redis Streams: tasks of any batch, worked by many processes.

Layout (``prefix`` ``agentwatch:`` by default; one Redis, not a cluster):

- ``q:0`` .. ``q:9``: one stream per priority band (a task's priority clamped to 0-9;
  lower first), read by the consumer group ``workers``. An entry is one task as JSON
  (``task``): batch id, task id, query, priority, timeout, traceparent, enqueued-at.
- ``b:{batch}``: the batch (``state``: running, draining, cancelled); ``:queued`` the
  ids enqueued and not dropped (enqueueing is idempotent: ``HSETNX`` then ``XADD``);
  ``:taken`` the ids a worker holds; ``:results`` each task's final record, written
  once (``HSETNX``: when two workers finish the same reclaimed task, the first record
  is kept and the second is dropped); ``:done`` a stream of the ids as their record
  (or drop) arrives, which the producer follows.
- ``dead``: a stream of the dead letters (batch, task, reason), capped.

A worker takes the highest band's next task in one script (``TAKE``): first an entry
whose worker went quiet for the visibility timeout (``XPENDING IDLE`` + ``XCLAIM``, the
steps of ``XAUTOCLAIM`` with the whole pending list searched: a worker that died;
a live one keeps its tasks with ``XCLAIM ... JUSTID`` heartbeats, which count no
delivery), then a new one (``XREADGROUP``). An entry delivered more than
``max_deliveries`` times ends ``failed`` with the reason (dead letter) instead of being
run again; a task of a draining or cancelled batch is dropped. Its record, the ack and
the entry's deletion are one script (``COMPLETE``), so a stream holds only the tasks
waiting or taken. Every call is retried with backoff while Redis is down or restarting
(``RedisClient.call``); a Redis restarted empty loses the queue, and the producer
enqueues again what has no result (``RedisBatch.recover``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from agentwatch.telemetry import Telemetry
from agentwatch.telemetry import names as n

from .sink import Record
from .task import Task

log = logging.getLogger(__name__)

AGENTWATCH_REDIS_VISIBILITY_TIMEOUT: Final = "AGENTWATCH_REDIS_VISIBILITY_TIMEOUT"
AGENTWATCH_REDIS_MAX_DELIVERIES: Final = "AGENTWATCH_REDIS_MAX_DELIVERIES"

BANDS: Final = 10  # priorities 0..9, the closed set of the priority label
GROUP: Final = "workers"
PREFIX: Final = "agentwatch:"
RUNNING: Final = "running"
DRAINING: Final = "draining"
SPENT: Final = "spent"  # its results cost its budget: no task of it starts any more
CANCELLED: Final = n.CANCELLED  # the one word for it (telemetry names)
DEAD_LETTERS_KEPT: Final = 10_000  # the dead stream is capped (MAXLEN ~)
KEPT_AFTER_END: Final = 86_400  # s: a finished batch's keys expire a day after its end
DEFAULT_VISIBILITY_TIMEOUT: Final = 30.0  # s
DEFAULT_MAX_DELIVERIES: Final = 5
ENQUEUE_CHUNK: Final = 500  # tasks per enqueue script call
STOPPING_PATIENCE: Final = 5.0  # s a stopping caller waits for a Redis that is down

T = TypeVar("T")
RECORD_FIELDS: Final = tuple(Task("", "").record())  # a record's keys, in their order


def band(priority: int) -> int:
    """The stream a priority goes to: 0..9, lower first."""
    return min(max(priority, 0), BANDS - 1)


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """How the queue hands tasks out: a task whose worker was quiet for
    ``visibility_timeout`` s is taken again; one taken more than ``max_deliveries``
    times without finishing ends failed (dead letter)."""

    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    max_deliveries: int = DEFAULT_MAX_DELIVERIES

    def __post_init__(self) -> None:
        if not self.visibility_timeout > 0:
            raise ValueError(f"{AGENTWATCH_REDIS_VISIBILITY_TIMEOUT} must be positive")
        if self.max_deliveries < 1:
            raise ValueError(f"{AGENTWATCH_REDIS_MAX_DELIVERIES} must be at least 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> QueueOptions:
        def value(name: str, kind: Callable[[str], T], default: T) -> T:
            text = env.get(name, "").strip()
            if not text:
                return default
            try:
                return kind(text)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {text!r}") from None

        return cls(
            value(AGENTWATCH_REDIS_VISIBILITY_TIMEOUT, float, DEFAULT_VISIBILITY_TIMEOUT),
            value(AGENTWATCH_REDIS_MAX_DELIVERIES, int, DEFAULT_MAX_DELIVERIES),
        )


class Keys:
    """Every key of the queue, under one prefix."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix
        self.streams = [f"{prefix}q:{i}" for i in range(BANDS)]
        self.dead = f"{prefix}dead"

    def batch(self, batch_id: str, part: str = "") -> str:
        return f"{self.prefix}b:{batch_id}{':' + part if part else ''}"


# A result written first: counted by status in ``b:{batch}:counts`` (``_done`` all of
# them); when the batch has a ``total`` and every task a result, its ``finished`` time,
# and its keys expire ``KEPT_AFTER_END`` from then.
_COUNTED = """
local function counted(base, status)
  local counts = base .. ':counts'
  redis.call('HINCRBY', counts, status, 1)
  local done = redis.call('HINCRBY', counts, '_done', 1)
  local total = tonumber(redis.call('HGET', base, 'total') or '0') or 0
  if total > 0 and done >= total then
    local now = redis.call('TIME')
    redis.call('HSET', base, 'finished', now[1] .. '.' .. string.format('%06d', tonumber(now[2])))
    for _, part in ipairs({'', ':queued', ':taken', ':results', ':done', ':counts', ':paid'}) do
      redis.call('EXPIRE', base .. part, KEPT_AFTER_END)
    end
  end
end
""".replace("KEPT_AFTER_END", str(KEPT_AFTER_END))

# KEYS: queued hash, the band streams. ARGV: triples band (0-based), task id, payload.
_ENQUEUE = """
local added = 0
for i = 1, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i + 1], '1') == 1 then
    redis.call('XADD', KEYS[2 + tonumber(ARGV[i])], '*', 'task', ARGV[i + 2])
    added = added + 1
  end
end
return added
"""

# KEYS: the band streams, then the dead stream. ARGV: group, consumer, min idle (ms),
# max deliveries, key prefix, dead-letter reason, dead stream cap, budget-spent reason.
# -> {stream, entry id, payload, deliveries, reclaims, dead letters, drops}; stream ""
# when there is nothing to take.
_TAKE = (
    _COUNTED
    + """
local group, me, idle, maxd, prefix = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local dead_key = KEYS[#KEYS]
local reclaims, dead, drops = 0, 0, 0
local function base(t) return prefix .. 'b:' .. t.b end
local function finish(key, id, t)
  redis.call('XACK', key, group, id)
  redis.call('XDEL', key, id)
  redis.call('HDEL', base(t) .. ':taken', t.id)
end
local function ended(t, status, reason)  -- a record of a task no worker ran to its end
  local record = cjson.encode({id = t.id, status = status, priority = t.priority,
                               result = cjson.null, error = reason, cost_usd = cjson.null})
  if redis.call('HSETNX', base(t) .. ':results', t.id, record) == 1 then
    redis.call('XADD', base(t) .. ':done', '*', 'id', t.id)
    counted(base(t), status)
  end
end
-- a task of a draining or cancelled batch is dropped: its producer runs it again on
-- resume; one of a batch whose budget is spent ends cancelled (the batch then finishes)
local function dropped(key, id, t)
  local state = redis.call('HGET', base(t), 'state')
  if state == 'spent' then
    ended(t, 'cancelled', ARGV[8])
    finish(key, id, t)
    drops = drops + 1
    return true
  end
  if state ~= 'draining' and state ~= 'cancelled' then return false end
  finish(key, id, t)
  redis.call('HDEL', base(t) .. ':queued', t.id)
  redis.call('XADD', base(t) .. ':done', '*', 'id', t.id)
  drops = drops + 1
  return true
end
local function dead_letter(key, id, t, deliveries)
  local reason = string.format(ARGV[6], deliveries - 1)
  ended(t, 'failed', reason)
  redis.call('XADD', dead_key, 'MAXLEN', '~', ARGV[7], '*', 'batch', t.b, 'task', t.id,
             'reason', reason)
  finish(key, id, t)
  dead = dead + 1
end
local function taken(key, entry, deliveries, reclaimed)
  local t = cjson.decode(entry[2][2])
  if dropped(key, entry[1], t) then return nil end
  if deliveries > maxd then dead_letter(key, entry[1], t, deliveries); return nil end
  redis.call('HSET', base(t) .. ':taken', t.id, entry[1])
  return {key, entry[1], entry[2][2], deliveries, reclaims + reclaimed, dead, drops}
end
for i = 1, #KEYS - 1 do
  local key = KEYS[i]
  local from = '-'
  for _ = 1, 16 do  -- first an entry whose worker went quiet
    local quiet = redis.call('XPENDING', key, group, 'IDLE', idle, from, '+', 1)[1]
    if not quiet then break end
    from = '(' .. quiet[1]
    if quiet[2] == me then  -- this worker's own, still running (its heartbeat was late)
      redis.call('XCLAIM', key, group, me, 0, quiet[1], 'JUSTID')  -- renewed, not rerun
    else
      local entry = redis.call('XCLAIM', key, group, me, idle, quiet[1])[1]
      if entry then
        local got = taken(key, entry, quiet[4] + 1, 1)
        if got then return got end
      else  -- deleted from the stream meanwhile: nothing left to run
        redis.call('XACK', key, group, quiet[1])
      end
    end
  end
  for _ = 1, 16 do
    local fresh = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', 1, 'STREAMS', key, '>')
    if not fresh then break end
    local got = taken(key, fresh[1][2][1], 1, 0)
    if got then return got end
  end
end
return {'', '', '', 0, reclaims, dead, drops}
"""
)

# KEYS: results hash, done stream, the task's stream, queued hash, taken hash, the batch,
# its paid set. ARGV: group, entry id, task id, record, mode (final | requeue | drop),
# payload, status, the attempt's cost in USD ("": none known), the attempt's name (entry
# id and worker). Every attempt's cost is added once to the batch's ``spent_usd`` (money
# spent is spent: a task cancelled and run again, or finished by two workers, cost
# twice; a call retried after its reply was lost is not counted again), while the batch
# exists; a batch with a ``budget_usd`` it reaches is ``spent`` (runs no more).
# -> 1 when this call wrote the task's result (or requeued / dropped it), else 0.
_COMPLETE = (
    _COUNTED
    + """
local acked = redis.pcall('XACK', KEYS[3], ARGV[1], ARGV[2])
if type(acked) ~= 'number' then acked = 0 end  -- no group: Redis restarted empty
local mode, out = ARGV[5], 0
if mode == 'final' then
  out = redis.call('HSETNX', KEYS[1], ARGV[3], ARGV[4])
  if out == 1 then
    redis.call('XADD', KEYS[2], '*', 'id', ARGV[3])
    counted(KEYS[6], ARGV[7])
  end
elseif mode == 'requeue' then
  if acked == 1 then redis.call('XADD', KEYS[3], '*', 'task', ARGV[6]); out = 1 end
else
  redis.call('HDEL', KEYS[4], ARGV[3])
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[3])
  out = 1
end
redis.call('XDEL', KEYS[3], ARGV[2])
if mode ~= 'requeue' or acked == 1 then redis.call('HDEL', KEYS[5], ARGV[3]) end
local cost = tonumber(ARGV[8])
if cost and redis.call('EXISTS', KEYS[6]) == 1 and redis.call('SADD', KEYS[7], ARGV[9]) == 1 then
  local ttl = redis.call('PTTL', KEYS[6])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[7], ttl) end
  local spent = tonumber(redis.call('HINCRBYFLOAT', KEYS[6], 'spent_usd', cost))
  local budget = tonumber(redis.call('HGET', KEYS[6], 'budget_usd') or '')
  if budget and spent >= budget and redis.call('HGET', KEYS[6], 'state') == 'running' then
    redis.call('HSET', KEYS[6], 'state', 'spent')
  end
end
return out
"""
)

# KEYS: one stream. ARGV: group, consumer, entry ids. Resets the idle time of the
# entries this consumer still holds (JUSTID: no delivery counted); -> how many.
_HEARTBEAT = """
local kept = 0
for i = 3, #ARGV do
  local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if type(p) == 'table' and p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    kept = kept + 1
  end
end
return kept
"""

# KEYS: the band streams. ARGV: group, consumer. A worker leaving removes its name from
# every band where it holds nothing (a name holding tasks stays: they are reclaimed).
_LEAVE = """
for _, key in ipairs(KEYS) do
  local pending = redis.pcall('XPENDING', key, ARGV[1], '-', '+', 1, ARGV[2])
  if type(pending) == 'table' and #pending == 0 then
    redis.call('XGROUP', 'DELCONSUMER', key, ARGV[1], ARGV[2])
  end
end
return 0
"""

# KEYS: the band streams. ARGV: group, idle (ms), the caller's name. Names of workers
# gone for good (nothing pending, quiet longer than idle: a killed worker's) leave the
# group; -> how many.
_PRUNE = """
local removed = 0
for _, key in ipairs(KEYS) do
  local consumers = redis.pcall('XINFO', 'CONSUMERS', key, ARGV[1])
  if type(consumers) == 'table' and consumers.err == nil then
    for _, consumer in ipairs(consumers) do
      local f = {}
      for i = 1, #consumer, 2 do f[consumer[i]] = consumer[i + 1] end
      if f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) and f['name'] ~= ARGV[3] then
        redis.call('XGROUP', 'DELCONSUMER', key, ARGV[1], f['name'])
        removed = removed + 1
      end
    end
  end
end
return removed
"""

# KEYS: the band streams. -> {waiting, pending} over all bands.
_DEPTH = """
local length, pending = 0, 0
for _, key in ipairs(KEYS) do
  length = length + redis.call('XLEN', key)
  local p = redis.pcall('XPENDING', key, ARGV[1])
  if type(p) == 'table' and p[1] then pending = pending + p[1] end
end
return {math.max(length - pending, 0), pending}
"""

_RETRYABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.TryAgainError,
    OSError,
)


class RedisUnavailable(Exception):
    """Redis stayed down longer than a stopping caller waits (``RedisClient.call``)."""


class RedisClient:
    """One connection pool and the queue's scripts; every call retried with backoff
    (0.1 s doubling to 5 s, jittered) while Redis is down or restarting, reported once
    per outage (a log line when it starts and when it ends, ``agentwatch_redis_retries_total``
    for every retry). A missing consumer group (Redis restarted empty) is made again."""

    def __init__(
        self,
        url: str,
        telemetry: Telemetry,
        *,
        keys: Keys | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        stopping_patience: float = STOPPING_PATIENCE,
    ) -> None:
        self.url = url
        self.telemetry = telemetry
        self.keys = keys or Keys()
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=10.0,
            driver_info=None,  # no CLIENT SETINFO: its version lookup reads files on the loop
        )
        self._sleep = sleep
        self._stopping_patience = stopping_patience
        self._down_since: float | None = None
        self.enqueue = self.redis.register_script(_ENQUEUE)
        self.take = self.redis.register_script(_TAKE)
        self.complete = self.redis.register_script(_COMPLETE)
        self.heartbeat = self.redis.register_script(_HEARTBEAT)
        self.depth = self.redis.register_script(_DEPTH)
        self.leave = self.redis.register_script(_LEAVE)
        self.prune = self.redis.register_script(_PRUNE)

    async def close(self) -> None:
        await self.redis.aclose()

    async def call(
        self, what: str, op: Callable[[], Awaitable[T]], *, stopping: asyncio.Event | None = None
    ) -> T:
        """``op()`` until it succeeds; Redis errors other than unavailability raise. Once
        ``stopping`` is set, Redis down for ``stopping_patience`` s raises
        ``RedisUnavailable``: a stopping worker does not wait for it for ever."""
        delay = 0.1
        while True:  # bounded by Redis coming back, the caller's cancellation or stopping
            try:
                result = await op()
            except _RETRYABLE as exc:
                self._down(what, exc)
                if stopping is not None and stopping.is_set():
                    down_for = time.monotonic() - (self._down_since or time.monotonic())
                    if down_for >= self._stopping_patience:
                        raise RedisUnavailable(
                            f"Redis at {safe_url(self.url)} did not answer for {down_for:.1f} s "
                            f"while {what}, and this worker is stopping"
                        ) from exc
            except redis_errors.ResponseError as exc:
                if not str(exc).startswith("NOGROUP"):
                    raise
                await self.ensure_groups()
                continue
            else:
                self._up()
                return result
            self.telemetry.queue.retried()
            await self._sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, 5.0)

    async def ensure_groups(self) -> None:
        """Every band's stream and the workers' group (from the start: entries added
        while the group was missing are delivered too)."""
        for stream in self.keys.streams:
            try:
                await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def _down(self, what: str, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "Redis at %s does not answer (%s while %s: %s); retrying with backoff",
                safe_url(self.url),
                type(exc).__name__,
                what,
                exc,
            )

    def _up(self) -> None:
        if self._down_since is not None:
            log.warning(
                "Redis at %s answers again after %.1f s; carrying on",
                safe_url(self.url),
                time.monotonic() - self._down_since,
            )
            self._down_since = None


def safe_url(url: str) -> str:
    """The URL without its password, for log lines."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def payload(task: Task, batch_id: str, timeout: float | None, traceparent: str | None) -> str:
    """A task as its stream entry carries it."""
    return json.dumps(
        {
            "b": batch_id,
            "id": task.id,
            "query": task.query,
            "priority": task.priority,
            "timeout": timeout,
            "traceparent": traceparent,
            "at": time.time(),
        },
        separators=(",", ":"),
    )


def normal_record(raw: str) -> Record:
    """A result record as Redis keeps it, in ``Task.record()``'s field order."""
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("a result record must be a JSON object")
    fields = RECORD_FIELDS
    return {key: value.get(key) for key in fields} | {
        k: v for k, v in value.items() if k not in fields
    }


class RedisBatch:
    """The producer's side of one batch: enqueue its tasks, follow their results,
    drain or cancel it, recover it when Redis lost it."""

    def __init__(self, client: RedisClient, batch_id: str) -> None:
        self.client = client
        self.batch_id = batch_id
        keys = client.keys
        self._meta = keys.batch(batch_id)
        self._queued = keys.batch(batch_id, "queued")
        self._taken = keys.batch(batch_id, "taken")
        self._results = keys.batch(batch_id, "results")
        self._done = keys.batch(batch_id, "done")
        self._counts = keys.batch(batch_id, "counts")
        self._last_done = "0"

    async def start(
        self,
        retry: Iterable[str] = (),
        *,
        total: int | None = None,
        budget_usd: float | None = None,
        budget_warning: str | None = None,
    ) -> None:
        """Mark the batch running; ``retry``: ids whose kept result is to be replaced;
        ``total``: its number of tasks, when it is known for good (its ``finished`` time
        is then set when the last one has a result); ``budget_usd``: what its results
        may cost (in Redis: once their ``cost_usd`` reach it, the batch is ``SPENT``:
        its tasks not started end cancelled, the running ones finish), with
        ``budget_warning`` (why it cannot stop unpriced calls) kept for its summary."""
        redis = self.client.redis
        await self.client.call("starting the batch", self.client.ensure_groups)
        meta: dict[Any, Any] = {"state": RUNNING}  # redis-py types the mapping invariantly
        meta["started"] = time.time()
        if total is not None:
            meta["total"] = total
        if budget_usd is not None:
            meta["budget_usd"] = repr(float(budget_usd))
        if budget_warning:
            meta["budget_warning"] = budget_warning
        await self.client.call("starting the batch", lambda: redis.hset(self._meta, mapping=meta))
        again = list(retry)
        if again:
            await self.client.call("retrying tasks", lambda: redis.hdel(self._results, *again))
            await self.client.call("retrying tasks", lambda: redis.hdel(self._queued, *again))

    async def enqueue(
        self, tasks: Iterable[Task], task_timeout: float | None, traceparent: str | None
    ) -> int:
        """Put each task in its band's stream unless it is there already; how many were."""
        keys = [self._queued, *self.client.keys.streams]
        added = 0
        chunk: list[str] = []

        async def flush() -> int:
            args = list(chunk)
            count = await self.client.call(
                "enqueueing", lambda: self.client.enqueue(keys=keys, args=args)
            )
            chunk.clear()
            return int(count)

        for task in tasks:
            chunk += [
                str(band(task.priority)),
                task.id,
                payload(task, self.batch_id, task_timeout, traceparent),
            ]
            if len(chunk) >= 3 * ENQUEUE_CHUNK:
                added += await flush()
        if chunk:
            added += await flush()
        return added

    async def lost(self) -> bool:
        """True when Redis no longer has this batch (restarted without its data)."""
        exists = await self.client.call(
            "checking the batch", lambda: self.client.redis.exists(self._meta)
        )
        return not exists

    async def follow(self, block_ms: int = 1000) -> list[tuple[str, Record | None]]:
        """The ids whose record (or drop: None) arrived since the last call, waiting
        up to ``block_ms`` for one; from the start of the batch on the first call."""
        redis = self.client.redis

        async def read() -> Any:
            return await redis.xread({self._done: self._last_done}, count=500, block=block_ms)

        answer = await self.client.call("reading results", read)
        if not answer:
            return []
        entries = answer[0][1]
        self._last_done = entries[-1][0]
        ids = [fields["id"] for _, fields in entries]
        raws = await self.client.call("reading results", lambda: redis.hmget(self._results, ids))
        return [
            (i, None if raw is None else normal_record(str(raw)))
            for i, raw in zip(ids, raws, strict=True)
        ]

    async def summary(self) -> tuple[dict[str, str], dict[str, int]] | None:
        """The batch's fields (state, total, started, finished) and its results counted
        by status (``_done``: all); None when Redis has no such batch."""
        redis = self.client.redis

        async def read() -> list[Any]:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._meta)
                pipe.hgetall(self._counts)
                return await pipe.execute()

        meta, counts = await self.client.call("reading the batch", read)
        if not meta:
            return None
        return dict(meta), {str(k): int(v) for k, v in counts.items()}

    async def page(self, after: str, limit: int) -> tuple[list[Record], str, bool]:
        """Up to ``limit`` results in the order they were written, after the ``done``
        entry ``after`` ("0": from the first); the last entry read (a drop, a task
        taken off a cancelled batch, is read past: it has no result); and whether the
        stream ended before ``limit`` entries."""
        redis = self.client.redis
        start = "-" if after == "0" else f"({after}"
        entries: Any = await self.client.call(
            "reading results", lambda: redis.xrange(self._done, start, "+", count=limit)
        )
        if not entries:
            return [], after, True
        ids = [fields["id"] for _, fields in entries]
        raws = await self.client.call("reading results", lambda: redis.hmget(self._results, ids))
        records = [normal_record(str(raw)) for raw in raws if raw is not None]
        return records, str(entries[-1][0]), len(entries) < limit

    async def running(self) -> int:
        """How many of the batch's tasks workers hold now."""
        return int(
            await self.client.call("reading the batch", lambda: self.client.redis.hlen(self._taken))
        )

    async def set_state(self, state: str) -> None:
        """Drain or cancel the batch (a cancelled one's keys expire a day from now)."""
        await self.client.call(
            "stopping the batch", lambda: self.client.redis.hset(self._meta, "state", state)
        )
        if state == CANCELLED:
            await self.ended()

    async def ended(self) -> None:
        """The batch's keys expire a day from now."""
        redis = self.client.redis
        names = (
            self._meta,
            self._queued,
            self._taken,
            self._results,
            self._done,
            self._counts,
            self.client.keys.batch(self.batch_id, "paid"),
        )

        async def expire() -> None:
            async with redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.expire(name, KEPT_AFTER_END)
                await pipe.execute()

        await self.client.call("ending the batch", expire)
