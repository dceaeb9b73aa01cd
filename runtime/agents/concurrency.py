"""The adaptive run limit: how many runs the process takes at once, steered by the event
loop's lag (a gradient controller in the manner of Netflix's concurrency-limits
``Gradient2`` and Envoy's adaptive concurrency filter, with the loop's lag as the
latency it watches).

Every run in flight costs the one event loop some work; past what the CPU can do, the
loop runs late, and everything on it (every run, every request, ``/metrics``) waits. The
lag of a 20 ms timer is that cost, measured. Each ``window`` of lag samples the limit
moves:

- the window's lag (its second highest sample: one stray pause is not a trend) above
  ``target_lag``: the limit shrinks to the runs that were in flight times the gradient,
  halfway between 1 and ``target / lag`` (at most by half in one window);
- between half the target and the target, it stays: the loop is busy enough. The
  lag answers a change late (a run admitted now does most of its work over the next
  model calls), so a limit grown until the lag passes the target has overshot by then,
  and a limit that grows again at once swings about the target: measured at 1 s model
  latency and 400 clients, the swinging limit gave the throughput of a fixed limit
  of 128 with three times its lag;
- under half the target, and runs were held back by the limit (some waited, or nearly
  every slot was taken): the limit grows, by a quarter while the lag is under a quarter
  of the target, by ``sqrt(limit)`` nearer to it;
- otherwise (the limit held nobody back) it stays: no evidence that more would help.

Once the lag has come near the target (a quarter of it), each change is given
``settle`` seconds to show before the next decision (the caller's estimate of a run's
duration; at most ``max_settle``); growth while the lag is far under the target waits
at most ``far_settle`` (with 10 s runs, a climb from 64 would otherwise take minutes),
and so does the next decision after a first cut made with the lag over twice the
target (a surge is answered twice within seconds, not once a run; cutting every few
seconds while the lag still shows the runs of before the cut made the limit swing
56-217 in simulation with 5 s runs).

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
from dataclasses import dataclass

from agentwatch.telemetry import ConfigurationError


@dataclass(frozen=True, slots=True)
class AdaptivePolicy:
    """``initial`` runs at once to start with, moved between ``min_limit`` and
    ``max_limit`` to keep the loop's lag under ``target_lag`` seconds; one decision per
    ``window`` seconds of samples (at least ``min_samples`` of them)."""

    initial: int = 64
    min_limit: int = 8
    max_limit: int = 10_000
    target_lag: float = 0.05
    window: float = 0.5
    min_samples: int = 5
    growth: float = 1.25  # per window, while the lag is under a quarter of the target
    hold: float = 0.5  # of the target: between this share of it and it, the limit stays
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
        if not (self.growth > 1 and 0 < self.max_shrink < 1 and 0 < self.hold <= 1):
            raise ConfigurationError(
                "growth must be above 1, max_shrink between 0 and 1, hold in (0, 1]"
            )


class AdaptiveLimit:
    """The current ``limit``, moved by ``observe(now, lag, in_flight, waiting)``."""

    __slots__ = (
        "_busiest",
        "_cut",
        "_held_back",
        "_lags",
        "_near",
        "_quiet_until",
        "_started",
        "limit",
        "policy",
    )

    def __init__(self, policy: AdaptivePolicy | None = None) -> None:
        self.policy = policy or AdaptivePolicy()
        self.limit = self.policy.initial
        self._started: float | None = None
        self._quiet_until = 0.0  # a change shows in the lag only after this
        self._near = False  # the lag came near the target once: growth is no longer free
        self._cut = False  # the last change was a cut
        self._lags: list[float] = []
        self._busiest = 0
        self._held_back = False

    def observe(
        self, now: float, lag: float, in_flight: int, waiting: int, settle: float = 0.0
    ) -> bool:
        """One lag sample at ``now`` with ``in_flight`` runs holding slots and ``waiting``
        more waiting; ``settle``: the seconds a change of the limit takes to show in the
        lag (about a run's duration: the runs admitted do their work over it). True when
        the limit changed."""
        if now < self._quiet_until:
            return False  # the last change has not shown yet: these samples predate it
        if self._started is None:
            self._started = now
        self._lags.append(lag)
        self._busiest = max(self._busiest, in_flight)
        self._held_back = self._held_back or waiting > 0
        policy = self.policy
        if now - self._started < policy.window or len(self._lags) < policy.min_samples:
            return False
        lag = _high(self._lags)
        new = self._next(lag)
        self._started, self._lags, self._busiest, self._held_back = None, [], 0, False
        grew, changed, self.limit = new > self.limit, new != self.limit, new
        far = lag < policy.target_lag / 4
        self._near = self._near or not far
        if changed and self._near:  # once near the target, each change is let show
            wait = min(max(settle, 0.0), policy.max_settle)
            surge = lag > 2 * policy.target_lag and not self._cut
            if (far and grew) or surge:
                # far under the target growth need not wait a whole run; the first cut
                # of a surge far over it is followed soon by another if need be
                wait = min(wait, policy.far_settle)
            self._quiet_until = now + wait
        if changed:
            self._cut = not grew
        return changed

    def _next(self, lag: float) -> int:
        policy, limit = self.policy, self.limit
        held_back = self._held_back or self._busiest >= limit - max(1, limit // 10)
        if lag > policy.target_lag:
            used = min(limit, max(self._busiest, 1))
            gradient = 1 - (1 - policy.target_lag / lag) / 2  # halfway to target / lag
            new = math.floor(used * max(gradient, 1 - policy.max_shrink))
            new = min(new, limit - 1)
        elif not held_back or lag > policy.target_lag * policy.hold:
            new = limit
        elif lag < policy.target_lag / 4:
            new = math.ceil(limit * policy.growth)
        else:
            new = limit + math.ceil(math.sqrt(limit))
        return max(policy.min_limit, min(policy.max_limit, new))


def own_lag(lag: float, cpu: float, wall: float) -> float:
    """The part of a sample's ``lag`` the loop caused: in proportion to the CPU seconds
    its thread used (``cpu``) in the ``wall`` seconds the sample took."""
    if wall <= 0:
        return lag
    return lag * min(1.0, max(0.0, cpu / wall))


def _high(lags: list[float]) -> float:
    """The second highest sample of a window (its only one when alone)."""
    if len(lags) < 2:
        return lags[0]
    first = second = 0.0
    for lag in lags:
        if lag > first:
            first, second = lag, first
        elif lag > second:
            second = lag
    return second
