"""The garbage collector's thresholds at issue 18's point (1 s model, 400 clients, a
fixed limit of 160): those ``cli/heap.py`` sets against the ones before (young every
2,000 allocations, Python's 10 and 10 above), with the runs' objects alone and with a
large long-lived heap beside them (``BALLAST``: what ``serve`` holds when it keeps the
results of finished batches; it is not frozen, so every full collection walks it).

Rounds alternate through the four (a busy moment of a shared machine falls on all),
each point as bench_admission measures it, the heap settled as ``agentwatch serve``
settles it and then set to the thresholds measured; every collection of warm-up and
window is timed (``gc.callbacks``), and the process's resident memory read after the
point. Medians of the rounds are shown, and each round's figures.

``python -m benchmarks.bench_heap`` writes its section into RESULTS.md (replacing the
one there), as ``make bench`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from agentwatch.runtime.cli import heap

from . import bench_admission
from .bench_admission import (
    ISSUE_POINT,
    Point,
    measure,
    median_of,
    model_process,
    rate_at_lag,
    write,
)

ROUNDS = 2
LIMIT = 160
BALLAST = 100_000  # kept results: a dict and two lists each, 300,000 objects tracked
TITLE = "## 11d. Garbage collector thresholds at 1 s model latency, 400 clients"
THRESHOLDS = {
    "2,000 / 10 / 10 (before)": (2000, 10, 10),
    "1,000 / 4 / 50 (cli/heap.py)": (
        heap.YOUNG_THRESHOLD,
        heap.MIDDLE_THRESHOLD,
        heap.OLD_THRESHOLD,
    ),
}


@dataclass
class Collections:
    """Every collection's pause by generation (0 young, 1 middle, 2 full), seconds."""

    pauses: dict[int, list[float]] = field(default_factory=lambda: {0: [], 1: [], 2: []})
    _started: float = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)


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


async def one(base_url: str, thresholds: tuple[int, int, int], ballast: bool) -> Measured:
    latency, clients = ISSUE_POINT
    timed = Collections()
    rss = [float("nan")]
    gc.callbacks.append(timed)
    try:
        with heap_as(thresholds, ballast):
            point = await measure(base_url, "fixed 160", latency, clients, LIMIT)
            rss[0] = rss_mib()
    finally:
        gc.callbacks.remove(timed)
    return Measured(point, timed.pauses, rss[0])


async def rounds() -> dict[tuple[str, bool], list[Measured]]:
    measured: dict[tuple[str, bool], list[Measured]] = {
        (name, ballast): [] for ballast in (False, True) for name in THRESHOLDS
    }
    async with model_process(ISSUE_POINT[0]) as base_url:
        for _ in range(ROUNDS):
            for name, ballast in measured:
                m = await one(base_url, THRESHOLDS[name], ballast)
                print(f"{name}, ballast {ballast}: {describe(m)}", flush=True)
                measured[(name, ballast)].append(m)
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


def section(measured: dict[tuple[str, bool], list[Measured]]) -> list[str]:
    lines = [
        TITLE,
        "",
        f"Fixed limit {LIMIT}, the heap settled as section 11, then the thresholds below; "
        f"with and without {BALLAST:,} kept results ({3 * BALLAST:,} objects the collector "
        f"tracks, made after the freeze). {ROUNDS} rounds through the four in turn; "
        "medians, and each round's runs/s @ lag p99 ms. Collections over warm-up and "
        "window (32 s): middle ones and their median pause, full ones and their longest, "
        "all collections' time; the process's resident memory after the point (Python "
        "keeps memory it freed: it carries the earlier points' high-water mark).",
        "",
        "| thresholds | ballast | runs/s | loop lag p99 ms | middle: count, median pause "
        "| full: count, longest | GC s | RSS MiB | rounds |",
        "|---|---|---:|---:|---|---|---:|---:|---|",
    ]
    for (name, ballast), runs in measured.items():
        middle = [len(m.pauses[1]) for m in runs]
        pauses = [p for m in runs for p in m.pauses[1]]
        full = [len(m.pauses[2]) for m in runs]
        longest = max((p for m in runs for p in m.pauses[2]), default=0.0)
        gc_s = statistics.median(m.gc_seconds for m in runs)
        median = median_of([m.point for m in runs])
        each = ", ".join(rate_at_lag(m.point) for m in runs)
        lines.append(
            f"| {name} | {'yes' if ballast else 'no'} "
            f"| {median.runs_per_s:.1f} | {median.lag_p99 * 1000:.0f} "
            f"| {statistics.median(middle):.0f}, {_ms(pauses)} "
            f"| {statistics.median(full):.0f}, {longest * 1000:.0f} ms | {gc_s:.1f} "
            f"| {statistics.median(m.rss_mib for m in runs):.0f} | {each} |"
        )
    before, now = THRESHOLDS
    parts = []
    for ballast in (False, True):
        old, new = (median_of([m.point for m in measured[(t, ballast)]]) for t in (before, now))
        parts.append(
            f"{'with' if ballast else 'without'} the kept results, {now.split(' (')[0]} "
            f"gave {new.runs_per_s / max(old.runs_per_s, 1e-9):.2f}x the runs/s at "
            f"{new.lag_p99 / max(old.lag_p99, 1e-9):.2f}x the lag p99 of "
            f"{before.split(' (')[0]}"
        )
    return [*lines, "", "Reading: " + "; ".join(parts) + ".", ""]


def run() -> list[str]:
    return section(asyncio.run(rounds()))


if __name__ == "__main__":
    write(run())
