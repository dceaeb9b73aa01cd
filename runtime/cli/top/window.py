"""What happened between two scrapes: the increase of every counter, gauges as now.

As PromQL's ``increase`` reads it, a series whose value went down was reset: its increase
is its new value (that series alone; a merged page of ``serve --workers`` loses a dead
worker's counts from some series only); a series gone from the page adds nothing. A new
``process_start_time_seconds`` (the earliest on the page) means the whole target
restarted: then every counter counts from zero. Summing the windows of several targets
gives the view of them all (``sum by``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from .scrape import SeriesKey, Snapshot

PROCESS_START: Final = "process_start_time_seconds"  # prometheus_client's process collector
_SAME_LENGTH: Final = 1.5  # windows up to this ratio apart are summed as they are


Labels = tuple[tuple[str, str], ...]
BySample = Mapping[str, Mapping[Labels, float]]  # sample name -> its series' values


def by_sample(values: Iterable[tuple[SeriesKey, float]]) -> dict[str, dict[Labels, float]]:
    """Series grouped by sample name (values of one key added up)."""
    grouped: dict[str, dict[Labels, float]] = {}
    for (name, labels), value in values:
        series = grouped.setdefault(name, {})
        series[labels] = series.get(labels, 0.0) + value
    return grouped


@dataclass(frozen=True, slots=True)
class Window:
    """``seconds`` between two scrapes; ``increases`` of the cumulative series in that
    time, ``gauges`` and ``totals`` (the cumulative values) at its end; ``restarted``: a
    target's counters were reset. Each grouped by sample name."""

    seconds: float
    increases: BySample = field(default_factory=dict)
    gauges: BySample = field(default_factory=dict)
    restarted: bool = False  # the target restarted (a new process start time)
    totals: BySample = field(default_factory=dict)
    declared: frozenset[str] = frozenset()  # sample names the page declares, series or not

    def increase(self, sample: str, **labels: str) -> float:
        """The sum of the increases of ``sample``'s series that carry ``labels``."""
        return _sum(self.increases.get(sample, {}), labels)

    def total(self, sample: str, **labels: str) -> float:
        """The sum of ``sample``'s cumulative values at the window's end (since start)."""
        return _sum(self.totals.get(sample, {}), labels)

    def gauge(self, sample: str, **labels: str) -> float | None:
        """The sum of ``sample``'s gauge series that carry ``labels`` (None: none exist)."""
        series = self.gauges.get(sample)
        return None if series is None else _sum(series, labels)

    def series(self, sample: str) -> Iterable[tuple[dict[str, str], float]]:
        """Each series of ``sample`` in this window: its labels and its increase."""
        for labels, value in self.increases.get(sample, {}).items():
            yield dict(labels), value

    def has(self, sample: str) -> bool:
        """Whether the page has ``sample`` (declared: perhaps with no series yet)."""
        return sample in self.declared or sample in self.increases or sample in self.gauges


def _sum(series: Mapping[Labels, float], labels: Mapping[str, str]) -> float:
    wanted = labels.items()
    return sum((v for pairs, v in series.items() if all(item in pairs for item in wanted)), 0.0)


def _started(snapshot: Snapshot) -> float | None:
    """When the target's process started: the earliest start time on its page."""
    starts = [v for (name, _), v in snapshot.values.items() if name == PROCESS_START]
    return min(starts, default=None)


def restarted(before: Snapshot, after: Snapshot) -> bool:
    """Whether the target restarted between the two scrapes (a new process start time);
    a counter that went down is a reset of that series only."""
    start_before, start_after = _started(before), _started(after)
    return start_before is not None and start_after is not None and start_after != start_before


def _increase(value: float, before: float | None, reset: bool) -> float:
    if reset or before is None or value < before:  # new, or counting from zero again
        return value
    return value - before


def between(before: Snapshot, after: Snapshot) -> Window:
    """The window from ``before`` to ``after``, two good scrapes of one target."""
    reset = restarted(before, after)
    grows = [(key, value) for key, value in after.values.items() if key in after.cumulative]
    increases = [(k, _increase(v, before.values.get(k), reset)) for k, v in grows]
    gauges = [(k, v) for k, v in after.values.items() if k not in after.cumulative]
    seconds = max(after.at - before.at, 1e-9)
    return Window(
        seconds, by_sample(increases), by_sample(gauges), reset, by_sample(grows), after.declared
    )


def combine(windows: Iterable[Window]) -> Window | None:
    """The windows of several targets summed; None if there are none.

    Targets are scraped together, so their windows are about as long: their increases
    add as they are. A window much longer than the others (a target back after it was
    unreachable) is scaled to the shortest, so that it adds its rate, not
    the work of several intervals at once."""
    items = list(windows)
    if not items:
        return None
    usual = min(w.seconds for w in items)
    increases: list[tuple[SeriesKey, float]] = []
    gauges: list[tuple[SeriesKey, float]] = []
    totals: list[tuple[SeriesKey, float]] = []
    for window in items:
        scale = usual / window.seconds if window.seconds > usual * _SAME_LENGTH else 1.0
        increases += [(key, value * scale) for key, value in _flat(window.increases)]
        gauges += _flat(window.gauges)
        totals += _flat(window.totals)
    seconds = max(w.seconds for w in items if w.seconds <= usual * _SAME_LENGTH)
    return Window(
        seconds,
        by_sample(increases),
        by_sample(gauges),
        any(w.restarted for w in items),
        by_sample(totals),
        frozenset().union(*(w.declared for w in items)),
    )


def _flat(grouped: BySample) -> list[tuple[SeriesKey, float]]:
    return [((name, labels), v) for name, series in grouped.items() for labels, v in series.items()]
