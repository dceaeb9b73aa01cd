"""The state of ``agentwatch top`` between ticks: each target's last good scrape, its
status, and the recent history of a few figures for the sparklines.

Each tick hands in one ``Snapshot`` per target. A good one that follows a good one makes
a ``Window``; one that failed leaves the target's last good scrape in place, so that when
the target answers again its window spans the gap (and a restart is seen as a reset).
The figures are computed for every target summed ("all") and for each target alone, so
that switching the selection shows its history at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .figures import Figures, compute
from .scrape import Snapshot
from .window import Window, between, combine

ALL: Final = "all"
HISTORY_POINTS: Final = 120  # the sparklines' width: 4 minutes at the default 2 s


@dataclass(slots=True)
class History:
    """The last ``HISTORY_POINTS`` values of the figures the sparklines draw."""

    runs_per_second: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    p95_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    errors_per_second: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))

    def add(self, figures: Figures) -> None:
        runs = figures.runs
        self.runs_per_second.append(runs.per_second)
        self.p95_seconds.append(runs.p95_seconds or 0.0)
        self.errors_per_second.append(runs.errors / figures.seconds)


@dataclass(slots=True)
class TargetStatus:
    url: str
    scrapes: int = 0
    failures: int = 0  # in a row
    error: str | None = None  # the last scrape's failure (None: it answered)
    restarted: bool = False  # its counters were reset in the last window
    last_good: Snapshot | None = None

    @property
    def up(self) -> bool:
        return self.scrapes > 0 and self.error is None

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "up": self.up,
            "error": self.error,
            "failures_in_a_row": self.failures,
            "restarted": self.restarted,
        }


class Monitor:
    """Targets, their windows and histories; ``update`` once a tick."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.targets = [TargetStatus(url) for url in urls]
        self.figures: dict[str, Figures | None] = dict.fromkeys([ALL, *urls])
        self.history: dict[str, History] = {key: History() for key in self.figures}
        self.ticks = 0

    @property
    def selections(self) -> list[str]:
        """What can be shown: all targets summed, then each (when there are several)."""
        urls = [t.url for t in self.targets]
        return [ALL, *urls] if len(urls) > 1 else [ALL]

    def update(self, snapshots: Sequence[Snapshot]) -> None:
        windows: dict[str, Window] = {}
        for target, snapshot in zip(self.targets, snapshots, strict=True):
            target.scrapes += 1
            if not snapshot.ok:
                target.error = snapshot.error
                target.failures += 1
                target.restarted = False
                continue
            target.error, target.failures = None, 0
            if target.last_good is not None:
                window = between(target.last_good, snapshot)
                windows[target.url] = window
                target.restarted = window.restarted
            target.last_good = snapshot
        self.ticks += 1
        summed = combine(windows.values())
        # one target: "all" is all there is to show (its figures are not computed twice)
        each: list[tuple[str, Window | None]] = [(ALL, summed)]
        if len(self.targets) > 1:
            each += [(t.url, windows.get(t.url)) for t in self.targets]
        for key, span in each:
            figures = None if span is None else compute(span)
            self.figures[key] = figures
            if figures is not None:
                self.history[key].add(figures)

    def as_json(self) -> dict[str, Any]:
        """The targets and the figures of the last window: all summed, then each target."""
        summed = self.figures[ALL]
        out: dict[str, Any] = {
            "targets": [t.as_json() for t in self.targets],
            "figures": None if summed is None else summed.as_json(),
        }
        if len(self.targets) > 1:
            out["by_target"] = {
                t.url: None if (f := self.figures[t.url]) is None else f.as_json()
                for t in self.targets
            }
        return out
