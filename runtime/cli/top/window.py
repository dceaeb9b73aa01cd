"""What happened between two scrapes: the increase of every counter, gauges as now.

A counter that went down means the target restarted (as PromQL's ``increase`` reads it);
so does a new ``process_start_time_seconds``. Then every counter of that target counts
from zero again: its increase is its current value, not a negative number. Summing the
windows of several targets gives the view of them all (``sum by``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from .scrape import SeriesKey, Snapshot

PROCESS_START: Final = "process_start_time_seconds"  # prometheus_client's process collector
_START_KEY: Final[SeriesKey] = (PROCESS_START, ())
_SAME_LENGTH: Final = 1.5  # windows up to this ratio apart are summed as they are


@dataclass(frozen=True, slots=True)
class Window:
    """``seconds`` between two scrapes; ``increases`` of the cumulative series in that
    time, ``gauges`` at its end; ``restarted``: a target's counters were reset."""

    seconds: float
    increases: Mapping[SeriesKey, float] = field(default_factory=dict)
    gauges: Mapping[SeriesKey, float] = field(default_factory=dict)
    restarted: bool = False
    totals: Mapping[SeriesKey, float] = field(default_factory=dict)  # cumulative, at its end

    def increase(self, sample: str, **labels: str) -> float:
        """The sum of the increases of ``sample``'s series that carry ``labels``."""
        return _sum(self.increases, sample, labels)

    def total(self, sample: str, **labels: str) -> float:
        """The sum of ``sample``'s cumulative values at the window's end (since start)."""
        return _sum(self.totals, sample, labels)

    def gauge(self, sample: str, **labels: str) -> float | None:
        """The sum of ``sample``'s gauge series that carry ``labels`` (None: none exist)."""
        if not any(name == sample for name, _ in self.gauges):
            return None
        return _sum(self.gauges, sample, labels)

    def series(self, sample: str) -> Iterable[tuple[dict[str, str], float]]:
        """Each series of ``sample`` in this window: its labels and its increase."""
        for (name, labels), value in self.increases.items():
            if name == sample:
                yield dict(labels), value

    def has(self, sample: str) -> bool:
        return any(name == sample for name, _ in self.increases) or any(
            name == sample for name, _ in self.gauges
        )


def _sum(values: Mapping[SeriesKey, float], sample: str, labels: Mapping[str, str]) -> float:
    total = 0.0
    for (name, pairs), value in values.items():
        if name == sample and all((k, v) in pairs for k, v in labels.items()):
            total += value
    return total


def restarted(before: Snapshot, after: Snapshot) -> bool:
    """Whether the target restarted between the two scrapes."""
    start_before, start_after = before.values.get(_START_KEY), after.values.get(_START_KEY)
    if start_before is not None and start_after is not None and start_after != start_before:
        return True
    return any(after.values.get(key, 0.0) < before.values[key] for key in before.cumulative)


def between(before: Snapshot, after: Snapshot) -> Window:
    """The window from ``before`` to ``after``, two good scrapes of one target."""
    reset = restarted(before, after)
    increases = {
        key: value if reset else value - before.values.get(key, 0.0)
        for key, value in after.values.items()
        if key in after.cumulative
    }
    gauges = {key: v for key, v in after.values.items() if key not in after.cumulative}
    totals = {key: v for key, v in after.values.items() if key in after.cumulative}
    return Window(max(after.at - before.at, 1e-9), increases, gauges, reset, totals)


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
    increases: dict[SeriesKey, float] = {}
    gauges: dict[SeriesKey, float] = {}
    totals: dict[SeriesKey, float] = {}
    for window in items:
        scale = usual / window.seconds if window.seconds > usual * _SAME_LENGTH else 1.0
        for key, value in window.increases.items():
            increases[key] = increases.get(key, 0.0) + value * scale
        for key, value in window.gauges.items():
            gauges[key] = gauges.get(key, 0.0) + value
        for key, value in window.totals.items():
            totals[key] = totals.get(key, 0.0) + value
    seconds = max(w.seconds for w in items if w.seconds <= usual * _SAME_LENGTH)
    return Window(seconds, increases, gauges, any(w.restarted for w in items), totals)
