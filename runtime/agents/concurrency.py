"""The adaptive run limit: how many runs the process takes at once, steered by the event
loop's lag (a gradient controller in the manner of Netflix's concurrency-limits
``Gradient2`` and Envoy's adaptive concurrency filter, with the loop's lag as the
latency it watches).

Every run in flight costs the one event loop some work; past what the CPU can do, the
loop runs late, and everything on it (every run, every request, ``/metrics``) waits. The
lag of a 20 ms timer is that cost, measured; its p99 is estimated as the second highest
of the last ``samples`` (200: 4 s and the lag, about their p99) since the last change
(one stray pause is not a trend). Steered over 100 samples (about the p98), the lag
p99 over the 12 s windows of benchmarks/RESULTS.md section 11 at 1 s model latency
and 400 clients ended over the target in 11 of 14 rounds one morning (36-105 ms); over
200, in 2 of 7 (24-100 ms): fewer, not none (a full collection at ~200 runs in flight
took 120-160 ms then, 108-115 ms once pooled connections no longer kept finished runs,
and a 12 s window's p99 is its 4th highest of ~400 samples). Each ``window`` (0.5 s)
the limit moves:

- the lag's p99 above ``target_lag``: the limit shrinks to the runs that were in flight
  times the gradient, halfway between 1 and ``target / lag`` (at most by half at once);
- between 0.8 of the target and the target, it stays: the loop is busy enough. The
  lag answers a change late (a run admitted now does most of its work over the next
  model calls), so a limit grown until the lag passes the target has overshot by then,
  and a limit that grows again at once swings about the target: measured at 1 s model
  latency and 400 clients, the swinging limit gave the throughput of a fixed limit
  of 128 with three times its lag. The band was 0.6-1 of the target: growth stopped at
  30 ms with the loop 79-86% busy where no limit ran it at 93-95%; at 0.8-1, paired
  rounds at that point gave 0.78 and 0.91 of no limit's runs/s where 0.6-1 gave 0.67
  and 0.82 (the machine's speed moves as much between rounds);
- under 0.8 of the target, and runs were held back by the limit (some waited, or nearly
  every slot was taken): the limit grows. When the caller tells the loop's CPU
  (``cpu``) and a run's duration (``settle``), by the CPU: once the loop's CPU share
  over a whole run (at most ``max_settle``) since the last change is known, to the
  runs in flight on average times ``busy_target`` over it (0.8; at most ``max_jump``
  times them, at least ``sqrt(limit)`` more; the CPU of windows in which the limit held
  nobody back is not counted: it says nothing of the limit). With 10 s runs the lag
  alone climbed 64 -> 640 in ~45 s; the CPU a run takes says in one run how many more
  the loop can take. Over ``busy_target`` by ``sqrt(limit)``; not told the CPU (or no
  run's duration known yet), by a quarter while the lag is under a quarter of the
  target and has never come near it, else by ``sqrt(limit)``. Near the target (over a
  quarter of it), growth waits for a full ``samples`` of lag: a p99 of fewer is lower.
  The CPU's step comes up to ``hold`` of the target too (up to 0.6 of it before the
  band moved; measured since only at the points of RESULTS.md section 11): a loop late
  with its CPU under ``busy_target`` may be given up to ``max_jump`` times its runs at
  once, still after a full ``samples`` of lag and a whole run;
- otherwise (the limit held nobody back) it stays: no evidence that more would help.

Once the lag has come near the target (a quarter of it), each change is given
``settle`` seconds to show before the next decision (at most ``max_settle``); growth
while the lag is far under the target waits at most ``far_settle``, and so does the next
decision after a first cut made with the lag over twice the target (a surge is answered
twice within seconds, not once a run; cutting every few seconds while the lag still
shows the runs of before the cut made the limit swing 56-217 in simulation with 5 s
runs). A step by the CPU always waits ``settle``: the next one needs the CPU its runs
took.

The lag it is given is the loop's own: a timer is late because the loop was running
callbacks (our runs' work) or because the process was not given the CPU (other
processes on a shared machine). ``own_lag`` keeps the part the loop's thread spent
running: fewer runs would not make a starved loop punctual, only slower.

So the limit is never what caps throughput while the loop keeps up, and never lets the
loop fall behind for long. Pure arithmetic on the samples it is given: no clock, no
loop, no sleep (tests feed it samples of a simulated clock).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from agentwatch.telemetry import ConfigurationError


@dataclass(frozen=True, slots=True)
class AdaptivePolicy:
    """``initial`` runs at once to start with, moved between ``min_limit`` and
    ``max_limit`` to keep the loop's lag p99 under ``target_lag`` seconds (estimated as
    the second highest of the last ``samples`` samples); one decision per ``window``
    seconds (at least ``min_samples`` new samples)."""

    initial: int = 64
    min_limit: int = 8
    max_limit: int = 10_000
    target_lag: float = 0.05
    window: float = 0.5
    min_samples: int = 5
    samples: int = 200  # the lag's p99 is estimated over this many (4 s and the lag)
    growth: float = 1.25  # per window, while the lag is under a quarter of the target
    hold: float = 0.8  # of the target: between this share of it and it, the limit stays
    busy_target: float = 0.8  # the loop's CPU share a step by the CPU aims at
    max_jump: float = 4.0  # the most one step by the CPU multiplies the limit by
    max_settle: float = 10.0  # s, the longest a change is given to show in the lag
    far_settle: float = 2.0  # s, the longest after growth far under target or a cut far over
    max_shrink: float = 0.5  # the most one window may take off

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.initial <= self.max_limit:
            raise ConfigurationError(
                "the adaptive limit needs 1 <= min_limit <= initial <= max_limit, got "
                f"{self.min_limit}, {self.initial}, {self.max_limit}"
            )
        if not (self.target_lag > 0 and self.window > 0 and self.min_samples >= 1):
            raise ConfigurationError("target_lag and window must be positive, min_samples >= 1")
        if self.samples < 2:
            raise ConfigurationError("samples must be at least 2 (the p99 is the second highest)")
        if not (self.growth > 1 and 0 < self.max_shrink < 1 and 0 < self.hold <= 1):
            raise ConfigurationError(
                "growth must be above 1, max_shrink between 0 and 1, hold in (0, 1]"
            )
        if not (0 < self.busy_target < 1 and self.max_jump >= self.growth):
            raise ConfigurationError("busy_target must be in (0, 1), max_jump >= growth")


class AdaptiveLimit:
    """The current ``limit``, moved by ``observe(now, lag, in_flight, waiting)``."""

    __slots__ = (
        "_busiest",
        "_cpu",
        "_cut",
        "_held_back",
        "_lags",
        "_last",
        "_near",
        "_new",
        "_quiet_until",
        "_slots",
        "_started",
        "_wall",
        "limit",
        "policy",
    )

    def __init__(self, policy: AdaptivePolicy | None = None) -> None:
        self.policy = policy or AdaptivePolicy()
        self.limit = self.policy.initial
        self._started: float | None = None  # this decision window's first sample
        self._quiet_until = 0.0  # a change shows in the lag only after this
        self._near = False  # the lag came near the target once: growth is no longer free
        self._cut = False  # the last change was a cut
        self._lags: deque[float] = deque(maxlen=self.policy.samples)  # since the last change
        self._new = 0  # samples in this decision window
        self._busiest = 0
        self._held_back = False
        self._last: float | None = None  # the previous sample's time
        # since the last change: the loop's CPU seconds, wall seconds, runs in flight x seconds
        self._cpu = self._wall = self._slots = 0.0

    def _forget_cpu(self) -> None:
        """The CPU, wall and runs-in-flight seconds count from now."""
        self._cpu = self._wall = self._slots = 0.0

    def pause(self) -> None:
        """The samples stop for a while (nothing to steer): the next one starts afresh
        (no CPU share across the pause, no lag from before it)."""
        self._last, self._started, self._new = None, None, 0
        self._lags.clear()
        self._forget_cpu()

    @property
    def busy(self) -> float | None:
        """The loop's CPU share since the last change (None: not told, or no time yet)."""
        return self._cpu / self._wall if self._wall > 0 and self._cpu >= 0 else None

    def observe(
        self,
        now: float,
        lag: float,
        in_flight: int,
        waiting: int,
        settle: float = 0.0,
        cpu: float | None = None,
    ) -> bool:
        """One lag sample at ``now`` with ``in_flight`` runs holding slots and ``waiting``
        more waiting; ``settle``: the seconds a change of the limit takes to show in the
        lag (about a run's duration: the runs admitted do their work over it); ``cpu``:
        the CPU seconds the loop's thread used since the previous sample (None: not
        known; the limit then moves by the lag alone). True when the limit changed."""
        last, self._last = self._last, now
        if cpu is None:
            if last is not None:
                self._cpu = -math.inf  # not told: no CPU share until the next change
        elif last is not None and now > last:
            self._cpu += min(cpu, now - last)
            self._wall += now - last
            self._slots += in_flight * (now - last)
        if now < self._quiet_until:
            return False  # the last change has not shown yet: these samples predate it
        if self._started is None:
            self._started = now
        self._lags.append(lag)
        self._new += 1
        self._busiest = max(self._busiest, in_flight)
        self._held_back = self._held_back or waiting > 0
        policy = self.policy
        if now - self._started < policy.window or self._new < policy.min_samples:
            return False
        lag = _high(self._lags)
        # runs were held back by the limit: some waited, or nearly every slot was taken
        held_back = self._held_back or self._busiest >= self.limit - max(1, self.limit // 10)
        new, jumped = self._next(lag, settle, held_back)
        self._started, self._new, self._busiest, self._held_back = None, 0, 0, False
        if new == self.limit:
            if not held_back:  # the CPU of runs the limit did not hold back says nothing of it
                self._forget_cpu()
            return False
        grew, self.limit = new > self.limit, new
        far = lag < policy.target_lag / 4
        self._near = self._near or not far
        self._lags.clear()
        self._forget_cpu()
        if self._near or jumped:  # once near the target, each change is let show
            wait = min(max(settle, 0.0), policy.max_settle)
            surge = lag > 2 * policy.target_lag and not self._cut
            if not jumped and ((far and grew) or surge):
                # far under the target growth need not wait a whole run; the first cut
                # of a surge far over it is followed soon by another if need be
                wait = min(wait, policy.far_settle)
            self._quiet_until = now + wait
        self._cut = not grew
        return True

    def _next(self, lag: float, settle: float, held_back: bool) -> tuple[int, bool]:
        """The next limit for this window's ``lag`` (its p99 estimate), and whether it is
        a step by the loop's CPU share (let show for a whole ``settle``)."""
        policy, limit, busy = self.policy, self.limit, self.busy
        new, jumped, far = limit, False, lag < policy.target_lag / 4
        gentle = limit + math.ceil(math.sqrt(limit))
        if lag > policy.target_lag:
            used = min(limit, max(self._busiest, 1))
            gradient = 1 - (1 - policy.target_lag / lag) / 2  # halfway to target / lag
            new = math.floor(used * max(gradient, 1 - policy.max_shrink))
            new = min(new, limit - 1)
        elif not held_back or lag > policy.target_lag * policy.hold:
            pass  # busy enough, or the limit holds nobody back
        elif not far and len(self._lags) < policy.samples:
            pass  # near the target, growth waits for a full window's p99
        elif busy is not None and settle > 0:
            if self._wall < min(settle, policy.max_settle):
                pass  # the CPU share is known over a whole run (at most max_settle) then
            elif busy < policy.busy_target:
                # the CPU the runs in flight took over a whole run says how many the loop
                # can run: busy_target's worth (at most max_jump times as many as ran)
                share = min(policy.busy_target / max(busy, 1e-9), policy.max_jump)
                ran = self._slots / self._wall
                new = max(math.ceil(ran * share), gentle)
                jumped = True
            else:
                new = gentle
        elif far and not self._near:
            new = math.ceil(limit * policy.growth)
        else:
            new = gentle
        return max(policy.min_limit, min(policy.max_limit, new)), jumped


def own_lag(lag: float, cpu: float, wall: float) -> float:
    """The part of a sample's ``lag`` the loop caused: in proportion to the CPU seconds
    its thread used (``cpu``) in the ``wall`` seconds the sample took."""
    if wall <= 0:
        return lag
    return lag * min(1.0, max(0.0, cpu / wall))


def _high(lags: Sequence[float]) -> float:
    """The second highest of the samples (about their p99 when they are 200; one stray
    pause is not a trend), or the only one."""
    if len(lags) < 2:
        return lags[0]
    first = second = 0.0
    for lag in lags:
        if lag > first:
            first, second = lag, first
        elif lag > second:
            second = lag
    return second
