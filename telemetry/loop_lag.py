"""Event loop lag: how late the loop runs a timer, sampled continuously.

A loop that is late by 100 ms delays every request and every stream by as much. The
monitor sleeps ``interval`` and records how much longer it took, two ways:

- ``agentwatch_event_loop_lag_seconds``, a histogram of every sample: the usual lag.
- ``agentwatch_event_loop_lag_max_seconds``, a gauge: the longest lag of the last
  ``window`` seconds, and a stall still in progress when scraped (``/metrics`` renders
  off the loop). A freeze is one late sample among fifty a second, so the histogram's
  p99 hides it (issue 13: a 6.5 s freeze showed as p99 1 ms); what users felt is the
  maximum. With the window longer than the scrape interval, every freeze reaches at
  least one scrape. ``rate(agentwatch_event_loop_lag_seconds_sum[1m])`` is the other
  time-weighted view: the fraction of wall time the loop was stalled.

Run it as a task of the service (``loop_lag_ctx`` for ``app.cleanup_ctx``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from .core import Telemetry

DEFAULT_INTERVAL = 0.02
DEFAULT_WINDOW = 60.0  # longer than any usual scrape interval (ours: 10 s; Prometheus: 1 m)


class LagWindow:
    """The largest lag recorded in the last ``window`` seconds, or the stall going on now
    if that is longer. Recorded from the loop, read from any thread (a scrape)."""

    def __init__(self, window: float = DEFAULT_WINDOW, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._peaks: deque[tuple[float, float]] = deque()  # (when, lag), lags decreasing
        self._due: float | None = None  # when the next sample's timer should fire

    def expect(self, due: float | None) -> None:
        """The next sample's timer should fire at ``due`` (``None``: no sample pending)."""
        with self._lock:
            self._due = due

    def record(self, now: float, lag: float) -> None:
        with self._lock:
            self._due = None
            peaks = self._peaks
            while peaks and peaks[-1][1] <= lag:  # a sliding-window maximum: O(1) amortised
                peaks.pop()
            peaks.append((now, lag))
            self._expire(now)

    def _expire(self, now: float) -> None:
        while self._peaks and self._peaks[0][0] < now - self.window:
            self._peaks.popleft()

    def max(self) -> float:
        now = self.clock()
        with self._lock:
            self._expire(now)
            recorded = self._peaks[0][1] if self._peaks else 0.0
            ongoing = now - self._due if self._due is not None else 0.0
        return max(recorded, ongoing, 0.0)


async def sample_loop_lag(
    on_sample: Callable[[float, float], None],
    interval: float = DEFAULT_INTERVAL,
    *,
    samples: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_due: Callable[[float], None] | None = None,
) -> None:
    """Sleep ``interval`` again and again; ``on_sample(now, lag)`` with how much later than
    asked each sleep ended, until cancelled (or after ``samples`` samples). ``on_due(t)``
    is told before each sleep when it should end. The one sampler of the loop's lag: the
    monitor below records it; the runtime's admission control steers by it."""
    taken = 0
    while samples is None or taken < samples:
        before = clock()
        if on_due is not None:
            on_due(before + interval)
        await asyncio.sleep(interval)
        now = clock()
        on_sample(now, max(0.0, now - before - interval))
        taken += 1


async def monitor_loop_lag(
    telemetry: Telemetry,
    interval: float = DEFAULT_INTERVAL,
    *,
    samples: int | None = None,
    window: float = DEFAULT_WINDOW,
) -> None:
    """Record lag until cancelled (or after ``samples`` samples)."""
    histogram = telemetry.metrics.event_loop_lag
    lags = LagWindow(window)
    telemetry.metrics.event_loop_lag_max.set_function(lags.max)

    def record(now: float, lag: float) -> None:
        histogram.observe(lag)
        lags.record(now, lag)

    try:
        await sample_loop_lag(
            record, interval, samples=samples, clock=lags.clock, on_due=lags.expect
        )
    finally:
        lags.expect(None)  # stopped: no stall to report from here on


async def loop_lag_ctx(
    telemetry: Telemetry, interval: float = DEFAULT_INTERVAL
) -> AsyncIterator[None]:
    """For ``app.cleanup_ctx``: the monitor runs as long as the application."""
    task = asyncio.get_running_loop().create_task(
        monitor_loop_lag(telemetry, interval), name="agentwatch-loop-lag"
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
