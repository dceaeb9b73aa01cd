"""The garbage collector's old-generation threshold: how many middle collections
come between full ones. ``cli/heap.py``'s against the others measured, at two points:
issue 18's (1 s model, 400 clients, a fixed limit of 160), with the runs' objects alone
and with a large long-lived heap beside them (``BALLAST``: what ``serve`` holds when it
keeps the results of finished batches; it is not frozen, so every full collection walks
it), and the point with the most runs in flight (5 s model, 1,000 clients, no limit:
every full collection walks 1,000 runs' objects).

Rounds alternate through them all (a busy moment of a shared machine falls on all),
each case as bench_admission measures it, the heap settled as ``agentwatch serve``
settles it and then set to the thresholds measured; every collection of warm-up and
window is timed (``gc.callbacks``), and the process's resident memory read after the
case. Medians of the rounds are shown, and each round's figures.

``python -m benchmarks.bench_heap`` writes its section into RESULTS.md (replacing the
one there), as ``make bench`` does.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from agentwatch.runtime.cli import event_loop, heap

from . import bench_admission
from .bench_admission import (
    ISSUE_POINT,
    Point,
    measure,
    median_of,
    model_process,
    rate_at_lag,
    timing,
    write,
)

ROUNDS = 2
BALLAST = 100_000  # kept results: a dict and two lists each, 300,000 objects tracked
TITLE = "## 11d. Garbage collector: full collections at 1 s and 5 s model latency"
YOUNG_MIDDLE = (heap.YOUNG_THRESHOLD, heap.MIDDLE_THRESHOLD)
OLD = (50, 100, 200)  # middle collections between full ones
CURRENT = (*YOUNG_MIDDLE, heap.OLD_THRESHOLD)


@dataclass(frozen=True)
class Case:
    """Where the thresholds are measured: a model latency, clients, a limit (0: none)."""

    latency: float
    clients: int
    limit: int
    ballast: bool

    @property
    def name(self) -> str:
        limit = f"fixed {self.limit}" if self.limit else "no limit"
        kept = f", {BALLAST:,} kept results" if self.ballast else ""
        return f"{self.latency:g} s, {self.clients:,} clients, {limit}{kept}"


CASES = (
    Case(*ISSUE_POINT, 160, False),
    Case(*ISSUE_POINT, 160, True),
    Case(5.0, 1000, 0, False),
)


def label(thresholds: tuple[int, int, int]) -> str:
    text = " / ".join(f"{t:,}" for t in thresholds)
    return f"{text} (cli/heap.py)" if thresholds == CURRENT else text


@dataclass
class Collections:
    """Every collection's pause by generation (0 young, 1 middle, 2 full), seconds, and
    the objects they found unreachable."""

    pauses: dict[int, list[float]] = field(default_factory=lambda: {0: [], 1: [], 2: []})
    unreachable: int = 0
    _started: float = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)
            self.unreachable += info["collected"] + info["uncollectable"]


@dataclass(frozen=True)
class Measured:
    point: Point
    pauses: dict[int, list[float]]
    rss_mib: float

    @property
    def gc_seconds(self) -> float:
        """All collections' time."""
        return sum(map(sum, self.pauses.values()))


@contextlib.contextmanager
def heap_as(thresholds: tuple[int, int, int], ballast: bool) -> Iterator[list[object]]:
    """The point's heap: settled as serve settles it, then these thresholds, and the
    ballast made after the freeze (so collections walk it)."""
    kept: list[object] = []

    def settle() -> None:
        heap.settle_heap()
        gc.set_threshold(*thresholds)
        if ballast:
            kept.extend({"id": i, "messages": [[i], [i]]} for i in range(BALLAST))

    with mock.patch.object(bench_admission, "settle_heap", settle):
        yield kept
    kept.clear()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def one(base_url: str, case: Case, thresholds: tuple[int, int, int]) -> Measured:
    timed = Collections()
    rss = [float("nan")]
    policy = f"fixed {case.limit}" if case.limit else "unlimited"
    gc.callbacks.append(timed)
    try:
        with heap_as(thresholds, case.ballast):
            point = await measure(base_url, policy, case.latency, case.clients, case.limit)
            rss[0] = rss_mib()
    finally:
        gc.callbacks.remove(timed)
    return Measured(point, timed.pauses, rss[0])


Results = dict[tuple[Case, tuple[int, int, int]], list[Measured]]


async def rounds() -> Results:
    measured: Results = {(case, (*YOUNG_MIDDLE, old)): [] for case in CASES for old in OLD}
    async with contextlib.AsyncExitStack() as stack:
        models = {
            latency: await stack.enter_async_context(model_process(latency))
            for latency in {case.latency for case in CASES}
        }
        for _ in range(ROUNDS):
            for case, thresholds in measured:
                m = await one(models[case.latency], case, thresholds)
                print(f"{case.name}, {label(thresholds)}: {describe(m)}", flush=True)
                measured[(case, thresholds)].append(m)
    return measured


def describe(m: Measured) -> str:
    full = m.pauses[2]
    return (
        f"{m.point.runs_per_s:.1f} runs/s, lag p99 {m.point.lag_p99 * 1000:.0f} ms, "
        f"middle {len(m.pauses[1])} x p50 {_ms(m.pauses[1])}, full {len(full)} x max "
        f"{max(full, default=0) * 1000:.0f} ms, GC {m.gc_seconds:.1f} s, "
        f"RSS {m.rss_mib:.0f} MiB"
    )


def _ms(pauses: list[float]) -> str:
    return f"{statistics.median(pauses) * 1000:.1f} ms" if pauses else "-"


def section(measured: Results) -> list[str]:
    spans = ", ".join(
        f"{sum(timing(latency)):.0f} s at {latency:g} s latency"
        for latency in sorted({case.latency for case in CASES})
    )
    lines = [
        TITLE,
        "",
        "The young and middle thresholds as cli/heap.py sets them "
        f"({YOUNG_MIDDLE[0]:,} / {YOUNG_MIDDLE[1]}), the old one (middle collections "
        "between full ones, at least) as below; the heap settled as section 11, then "
        f"these thresholds; with {BALLAST:,} kept results, {3 * BALLAST:,} objects the "
        f"collector tracks made after the freeze. {ROUNDS} rounds through every case "
        "and threshold in turn; medians, and each round's runs/s @ lag p99 ms. "
        f"Collections over warm-up and window ({spans}): middle "
        "ones and their median pause, full ones and their longest, all collections' "
        "time; the process's resident memory after the case (Python keeps memory it "
        "freed: it carries the earlier cases' high-water mark).",
        "",
        "| case | thresholds | runs/s | loop lag p99 ms | middle: count, median pause "
        "| full: count, longest | GC s | RSS MiB | rounds |",
        "|---|---|---:|---:|---|---|---:|---:|---|",
    ]
    for (case, thresholds), runs in measured.items():
        middle = [len(m.pauses[1]) for m in runs]
        pauses = [p for m in runs for p in m.pauses[1]]
        full = [len(m.pauses[2]) for m in runs]
        longest = max((p for m in runs for p in m.pauses[2]), default=0.0)
        gc_s = statistics.median(m.gc_seconds for m in runs)
        median = median_of([m.point for m in runs])
        each = ", ".join(rate_at_lag(m.point) for m in runs)
        lines.append(
            f"| {case.name} | {label(thresholds)} "
            f"| {median.runs_per_s:.1f} | {median.lag_p99 * 1000:.0f} "
            f"| {statistics.median(middle):.0f}, {_ms(pauses)} "
            f"| {statistics.median(full):.0f}, {longest * 1000:.0f} ms | {gc_s:.1f} "
            f"| {statistics.median(m.rss_mib for m in runs):.0f} | {each} |"
        )
    parts = []
    for case in CASES:
        points = {
            t: median_of([m.point for m in ms]) for (c, t), ms in measured.items() if c == case
        }
        gc_time = {
            t: statistics.median(m.gc_seconds for m in ms)
            for (c, t), ms in measured.items()
            if c == case
        }
        first, *others = points
        against = ", ".join(
            f"{t[2]} {points[t].runs_per_s / max(points[first].runs_per_s, 1e-9):.2f}x the "
            f"runs/s at {points[t].lag_p99 / max(points[first].lag_p99, 1e-9):.2f}x the lag "
            f"p99 and {gc_time[t] / max(gc_time[first], 1e-9):.2f}x the GC time"
            for t in others
        )
        parts.append(f"{case.name}: against an old threshold of {first[2]}, {against}")
    return [*lines, "", "Reading: " + "; ".join(parts) + ".", ""]


def run() -> list[str]:
    return section(event_loop.run(rounds(), event_loop.loop_factory()))


if __name__ == "__main__":
    write(run())
