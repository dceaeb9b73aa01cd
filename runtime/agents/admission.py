"""Admission: how many runs an ``Agent`` runs at once, and who waits.

At most ``limit`` runs hold a slot at once; the rest wait their turn, first come first
served. The limit is a number (``AGENTWATCH_MAX_CONCURRENT_RUNS=N``), none (``0``), or
adaptive (the default: ``concurrency.AdaptiveLimit``, moved by the event loop's lag,
sampled while runs are in flight or waiting).

Under the adaptive limit, waiters are given freed slots paced (``PACE``: at most twice
as fast as runs end, on average), not all at once: a model answers about as fast each
time, so runs admitted in a clump do their work in a clump at every model call after,
and such clumps make the loop late while its CPU is mostly idle.

Runs of batches (``batch=True``) may hold at most ``batch_limit`` of the slots: the other
``limit - batch_limit`` (a quarter, at least one, when ``limit`` > 1) stay for
interactive runs, so a queue of batch tasks never makes a plain run wait behind it for
more than ``batch_limit`` runs already admitted. Callers give a deadline for the wait
(an interactive run's wait is part of its time) or None (a batch's run: its task has
its own timeout); a run that gets no slot by its deadline fails with ``TimeoutError``.

Load shedding, for interactive runs only (a batch bounds its own queue): at most
``max_waiting`` wait at once, and none longer than ``max_wait`` seconds; past either the
run is refused with ``AdmissionRefused`` (the service answers 503 with Retry-After: the
runs waiting ahead at the rate slots were freed over the last ``RATE_WINDOW`` seconds,
1 to ``MAX_RETRY_AFTER`` s).
Every end of a wait is recorded through ``telemetry.agent_runs``: admitted (its wait),
or shed by reason (``timeout``, ``cancelled``, ``too_many_waiting``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from agentwatch.telemetry import AgentwatchError, Telemetry, sample_loop_lag
from agentwatch.telemetry.names import SHED_CANCELLED, SHED_TIMEOUT, SHED_TOO_MANY_WAITING

from .concurrency import AdaptiveLimit, own_lag

INTERACTIVE_SHARE: Final = 0.25  # of the slots, that runs of batches never take
DEFAULT_MAX_WAITING: Final = 1000  # interactive runs waiting at once
DEFAULT_MAX_WAIT: Final = 30.0  # seconds an interactive run may wait for its slot
RETRY_AFTER: Final = 1  # seconds, the least Retry-After of a refused run
MAX_RETRY_AFTER: Final = 60  # seconds, the most
RATE_WINDOW: Final = 10.0  # seconds of slot releases the Retry-After is estimated from
IDLE_STOP: Final = 1.0  # the lag sampler stops after this long with no run in sight
PACE: Final = 2.0  # waiters are given slots at most this many times the runs' turnover
PACE_BURST: Final = 0.05  # s of turns that may be given at once after a quiet time
RUN_WEIGHT: Final = 1 / 32  # of each run's time in the moving average of runs' times
# s: a turn this near is due (uvloop's clock and timers count whole milliseconds: a timer
# for a turn less than 1 ms off fired at once, found the turn not yet come, and was set
# again: 5,573 wake-ups for 136 turns in tests/unit/test_admission.py)
TIMER_SLACK: Final = 0.001


# Calls its argument with (now, lag) for each sample of the loop's lag, until cancelled.
LagFeed = Callable[[Callable[[float, float], None]], Coroutine[Any, Any, None]]


def batch_limit_for(limit: int) -> int:
    """The slots runs of batches may hold out of ``limit`` (all of them when ``limit`` is 1)."""
    if limit <= 1:
        return limit
    return limit - max(1, int(limit * INTERACTIVE_SHARE))


class AdmissionRefused(AgentwatchError):
    """The run was not admitted: too many runs wait already (``too_many_waiting``), or it
    waited ``max_wait`` without a slot (``timeout``). Try again after ``retry_after``."""

    def __init__(self, reason: str, message: str, retry_after: int = RETRY_AFTER) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class _Waiter:
    __slots__ = ("batch", "future", "since")

    def __init__(self, future: asyncio.Future[None], batch: bool, since: float) -> None:
        self.future = future
        self.batch = batch
        self.since = since  # when it came (the loop's clock)


class Admission:
    """Run slots. ``limit``: a number, None or 0 (no limit, nobody waits), or an
    ``AdaptiveLimit``. ``telemetry``: where waits, sheds and the limit are recorded."""

    def __init__(
        self,
        limit: int | AdaptiveLimit | None,
        *,
        telemetry: Telemetry | None = None,
        max_waiting: int | None = DEFAULT_MAX_WAITING,
        max_wait: float | None = DEFAULT_MAX_WAIT,
        lag_feed: LagFeed | None = sample_loop_lag,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.adaptive = limit if isinstance(limit, AdaptiveLimit) else None
        self._fixed = None if isinstance(limit, AdaptiveLimit) else (limit or None)
        self.max_waiting = max_waiting
        self.max_wait = max_wait
        self.in_flight = 0
        self.batch_in_flight = 0
        self._waiters: OrderedDict[int, _Waiter] = OrderedDict()  # interactive, in order
        self._batch_waiters: OrderedDict[int, _Waiter] = OrderedDict()
        self._arrivals = 0
        self._meter = telemetry.agent_runs if telemetry is not None else None
        self._lag_feed = lag_feed  # None: the caller calls observe_lag itself (tests)
        self._sampler: asyncio.Task[None] | None = None
        self._busy_at = 0.0  # when a run was last in flight or waiting (the loop's clock)
        self._last_sample: tuple[float, float] | None = None  # (when, the loop's CPU time)
        self._clock = clock  # for the release rate (Retry-After)
        self._since = clock()
        # slots freed, counted by second (at most RATE_WINDOW + 1 entries): [second, count]
        self._freed: deque[list[int]] = deque()
        self._taken: deque[float] = deque()  # when each slot in use was taken, oldest first
        self._run_time = 0.0
        self._turn = 0.0  # the next waiter's slot may be given from then (the loop's clock)
        # the timer that gives the next turn, and its loop (an Admission may outlive one)
        self._pacer: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None
        if self._meter is not None:
            self._meter.limit(self.limit)

    @property
    def limit(self) -> int | None:
        return self.adaptive.limit if self.adaptive is not None else self._fixed

    @property
    def batch_limit(self) -> int | None:
        limit = self.limit
        return batch_limit_for(limit) if limit else None

    @property
    def waiting(self) -> int:
        return len(self._waiters) + len(self._batch_waiters)

    def _free(self, batch: bool) -> bool:
        limit = self.limit
        if limit is None:
            return True
        if self.in_flight >= limit:
            return False
        return not batch or self.batch_in_flight < batch_limit_for(limit)

    def _take(self, batch: bool, waited: float) -> None:
        self.in_flight += 1
        self._taken.append(self._clock())
        if batch:
            self.batch_in_flight += 1
        if self._meter is not None:
            self._meter.admitted(waited)

    def release(self, *, batch: bool = False) -> None:
        self.in_flight -= 1
        now = self._clock()
        if self._taken:
            held, average = now - self._taken.popleft(), self._run_time
            self._run_time = held if not average else average + (held - average) * RUN_WEIGHT
        second = math.floor(now)
        if self._freed and self._freed[-1][0] == second:
            self._freed[-1][1] += 1
        else:
            self._freed.append([second, 1])
            self._forget(now)
        if batch:
            self.batch_in_flight -= 1
        if self._meter is not None:
            self._meter.released()
        self._wake()

    def release_rate(self) -> float:
        """Slots freed per second over the last ``RATE_WINDOW`` seconds (or since this
        started, when that is shorter); 0 when none was."""
        now = self._clock()
        self._forget(now)
        count = sum(n for _, n in self._freed)
        return count / min(RATE_WINDOW, max(now - self._since, 1.0))

    def run_time(self) -> float:
        """About how long a run holds its slot (0 until one was freed): a moving average
        of the time from a slot's take to a release, matched oldest first. Matched so,
        one run's time is off, their sum is not (every take is matched once), and an
        idle time in between counts for nothing (a rate of releases over the last
        seconds, after an idle time, made runs of 1 s look 600 s long)."""
        return self._run_time

    def _forget(self, now: float) -> None:
        """Counts older than the window go (on each new second: at most RATE_WINDOW + 1
        entries are kept, whether or not anything reads the rate)."""
        freed = self._freed
        while freed and freed[0][0] < now - RATE_WINDOW:
            freed.popleft()

    def retry_after(self) -> int:
        """Seconds after which a refused run may find a slot: the interactive runs
        waiting, and itself, at the rate slots were freed (``release_rate``;
        ``RETRY_AFTER`` to ``MAX_RETRY_AFTER``; with no slot freed meanwhile, the longest
        a run may wait, ``max_wait``)."""
        rate = self.release_rate()
        if rate == 0:
            seconds = self.max_wait if self.max_wait is not None else DEFAULT_MAX_WAIT
        else:
            seconds = (len(self._waiters) + 1) / rate
        return max(RETRY_AFTER, math.ceil(min(seconds, MAX_RETRY_AFTER)))  # inf: 60

    def _wake(self) -> None:
        """Give free slots to the waiters first in line that may take them (under the
        adaptive limit, paced: ``_paced``)."""
        while True:
            interactive = next(iter(self._waiters.items()), None)
            batch = next(iter(self._batch_waiters.items()), None) if self._free(True) else None
            if not self._free(False) or (interactive is None and batch is None):
                return
            if self._paced():
                return
            if interactive is None or (batch is not None and batch[0] < interactive[0]):
                assert batch is not None
                self._batch_waiters.popitem(last=False)
                waiter = batch[1]
            else:
                self._waiters.popitem(last=False)
                waiter = interactive[1]
            self._take(waiter.batch, asyncio.get_running_loop().time() - waiter.since)
            waiter.future.set_result(None)

    def _paced(self) -> bool:
        """True when the next waiter must wait for its turn (a timer calls ``_wake`` then).

        Under the adaptive limit, waiters are given their slots at most ``PACE`` times
        as fast as runs hold them for (``limit`` over ``run_time``), not all at once:
        runs admitted together do their work together over every model call after
        (a model answers in about the same time each), and such a clump makes the loop
        late though the CPU is mostly idle. Spread out, the same runs keep the lag low.
        """
        if self.adaptive is None:
            return False
        seconds = self.run_time()
        if not seconds:
            return False
        loop = asyncio.get_running_loop()
        now, turn = loop.time(), self._turn
        if turn <= now + TIMER_SLACK:
            self._turn = max(turn, now - PACE_BURST) + seconds / (PACE * self.adaptive.limit)
            return False
        if self._pacer is None or self._pacer[0] is not loop:
            self._pacer = (loop, loop.call_at(turn, self._next_turn))
        return True

    def _next_turn(self) -> None:
        self._pacer = None
        self._wake()

    async def acquire(
        self,
        *,
        deadline: float | None,
        batch: bool = False,
        on_wait: Callable[[], Awaitable[None]] | None = None,
        interval: float = 10.0,
    ) -> None:
        """Take a slot by ``deadline`` (the loop's clock; None: no limit), else
        ``TimeoutError``; an interactive run refused by the load shedding raises
        ``AdmissionRefused``.

        When the run has to wait, ``on_wait()`` is awaited at once and then every
        ``interval`` seconds while it waits (a stream's keep-alive); the run keeps its
        place in the queue meanwhile. Cancelled or timed out, it holds nothing.
        """
        self._watch()
        if self._free(batch) and not (self._batch_waiters if batch else self._waiters):
            self._take(batch, 0.0)
            return
        if not batch and self.max_waiting is not None and len(self._waiters) >= self.max_waiting:
            self._shed(SHED_TOO_MANY_WAITING)
            raise AdmissionRefused(
                SHED_TOO_MANY_WAITING,
                f"{self.max_waiting} runs are waiting already; try again later",
                self.retry_after(),
            )
        loop = asyncio.get_running_loop()
        started = loop.time()
        cap = None if batch or self.max_wait is None else started + self.max_wait
        until = cap if deadline is None or (cap is not None and cap < deadline) else deadline
        self._arrivals += 1
        key, waiter = self._arrivals, _Waiter(loop.create_future(), batch, started)
        (self._batch_waiters if batch else self._waiters)[key] = waiter
        if self._meter is not None:
            self._meter.waiting(1)
        try:
            await self._wait(waiter.future, until, on_wait, interval)
        except BaseException as exc:
            self._leave(key, waiter)
            if isinstance(exc, TimeoutError) and until is not None and until == cap:
                self._shed(SHED_TIMEOUT)
                raise AdmissionRefused(
                    SHED_TIMEOUT,
                    f"no run slot within {self.max_wait:g} s; try again later",
                    self.retry_after(),
                ) from None
            self._shed(SHED_CANCELLED if isinstance(exc, asyncio.CancelledError) else SHED_TIMEOUT)
            raise
        finally:
            if self._meter is not None:
                self._meter.waiting(-1)

    async def _wait(
        self,
        future: asyncio.Future[None],
        until: float | None,
        on_wait: Callable[[], Awaitable[None]] | None,
        interval: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if on_wait is not None:
                await on_wait()
                if future.done():
                    return
            remaining = None if until is None else until - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            step = remaining if on_wait is None else min(interval, remaining or interval)
            done, _ = await asyncio.wait({future}, timeout=step)
            if done:
                return

    def _leave(self, key: int, waiter: _Waiter) -> None:
        """The waiter stopped waiting: out of the line, and a slot it was given back."""
        (self._batch_waiters if waiter.batch else self._waiters).pop(key, None)
        if waiter.future.done() and not waiter.future.cancelled():
            self.release(batch=waiter.batch)  # granted meanwhile: to the next in line
        else:
            waiter.future.cancel()

    def _shed(self, reason: str) -> None:
        if self._meter is not None:
            self._meter.shed(reason)

    # --- the adaptive limit's feedback: the loop's lag while there is work ------------

    def _watch(self) -> None:
        if self.adaptive is None or self._lag_feed is None:
            return
        loop = asyncio.get_running_loop()
        self._busy_at = loop.time()
        if self._sampler is None:
            self._sampler = loop.create_task(
                self._lag_feed(self.observe_lag), name="agentwatch-admission-lag"
            )

    def observe_lag(self, now: float, lag: float, cpu: float | None = None) -> None:
        """One sample of the loop's lag at ``now``; ``cpu``: the loop thread's CPU seconds
        so far (default ``time.thread_time()``, this being the loop's thread), so that
        only the loop's own part of the lag counts (``concurrency.own_lag``)."""
        adaptive = self.adaptive
        assert adaptive is not None
        cpu = time.thread_time() if cpu is None else cpu
        last, self._last_sample = self._last_sample, (now, cpu)
        used = None
        if last is not None:
            used = cpu - last[1]
            lag = own_lag(lag, used, now - last[0])
        loop = asyncio.get_running_loop()
        if self.in_flight or self.waiting:
            self._busy_at = loop.time()
        elif loop.time() - self._busy_at > IDLE_STOP:
            self.close()  # nothing to steer: sampling again with the next run
            return
        # a change of the limit shows in the lag over about a run's duration
        settle = self.run_time()
        if adaptive.observe(now, lag, self.in_flight, self.waiting, settle, used):
            if self._meter is not None:
                self._meter.limit(adaptive.limit)
            self._wake()

    def close(self) -> None:
        """Stop sampling the loop's lag (the runtime stops; the next run starts it again)."""
        sampler, self._sampler, self._last_sample = self._sampler, None, None
        if sampler is not None:
            sampler.cancel()
        if self.adaptive is not None:
            self.adaptive.pause()
