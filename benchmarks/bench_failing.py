"""A model that fails every call: what failed runs leave for the garbage collector.

A failed run's error kept its run in a reference cycle (its traceback's frames held the
error: LangChain's ``agenerate``, LangGraph's task loop), so that only a full
collection freed the run's objects; ``Agent`` now clears those frames
(``agents/frames.py``). Measured here both ways: ``release_frames`` as it is, and
replaced by a no-op. The builtin model in a process of its own answers every call with
a 500 (``agentwatch model --error-rate 1 --fail-status 500``, no latency); 400 clients,
the adaptive limit and the default retry policy, each point as bench_admission measures
it (the heap settled as ``agentwatch serve`` settles it), its warm-up and window
stretched to ``WARMUP`` + ``WINDOW`` seconds so that garbage can pile up. Counted over
both: failed runs a second, the objects the collections found unreachable (and a last
full collection after the point: what was still waiting), the full collections and the
longest, the loop lag p99 of the window, and how much the resident memory grew.
Rounds alternate between the two (a busy moment falls on both).

``python -m benchmarks.bench_failing`` writes its section into RESULTS.md (replacing
the one there), as ``make bench`` does.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from unittest import mock

from agentwatch.runtime.agents import agent
from agentwatch.runtime.cli import event_loop

from . import bench_admission
from .bench_admission import measure, model_process, write
from .bench_heap import Collections, rss_mib

ROUNDS = 2
CLIENTS = 400
WARMUP, WINDOW = 10.0, 20.0
FAILING = ("--error-rate", "1", "--fail-status", "500")
WAYS = ("frames cleared (agents/frames.py)", "frames kept (no-op)")
TITLE = "## 11f. A model failing every call: the garbage failed runs leave"


@dataclass(frozen=True)
class Measured:
    failed_per_s: float
    lag_p99: float
    unreachable: int
    left: int  # found by a full collection after the point
    full: list[float]
    rss_growth_mib: float


@contextlib.contextmanager
def frames(way: str) -> Iterator[None]:
    if way == WAYS[0]:
        yield
        return
    with mock.patch.object(agent, "release_frames", return_value=None):
        yield


async def one(base_url: str, way: str) -> Measured:
    timed = Collections()
    before = rss_mib()
    gc.callbacks.append(timed)
    try:
        with (
            frames(way),
            mock.patch.object(bench_admission, "timing", return_value=(WARMUP, WINDOW)),
        ):
            point = await measure(base_url, way, 0.0, CLIENTS, None)
        grown = rss_mib() - before
        left = gc.collect()
    finally:
        gc.callbacks.remove(timed)
    return Measured(
        point.failed / WINDOW,
        point.lag_p99,
        timed.unreachable - left,
        left,
        timed.pauses[2][1:-1],  # the first settled the heap, the last came after the point
        grown,
    )


async def rounds() -> dict[str, list[Measured]]:
    measured: dict[str, list[Measured]] = {way: [] for way in WAYS}
    async with model_process(0.0, *FAILING) as base_url:
        for _ in range(ROUNDS):
            for way in WAYS:
                m = await one(base_url, way)
                print(f"{way}: {describe(m)}", flush=True)
                measured[way].append(m)
    return measured


def describe(m: Measured) -> str:
    return (
        f"{m.failed_per_s:.0f} failed runs/s, lag p99 {m.lag_p99 * 1000:.0f} ms, "
        f"{m.unreachable:,} objects found unreachable, {m.left:,} left after, full "
        f"{len(m.full)} x max {max(m.full, default=0) * 1000:.0f} ms, RSS "
        f"{m.rss_growth_mib:+.0f} MiB"
    )


def section(measured: dict[str, list[Measured]]) -> list[str]:
    lines = [
        TITLE,
        "",
        f"{CLIENTS} clients, the adaptive limit, a model answering 500 to every call "
        f"(no latency), the default retry policy; {WARMUP:g} s warm-up and {WINDOW:g} s "
        f"window counted together; {ROUNDS} rounds alternating between the two ways, "
        "medians and each round. Unreachable: objects the collections of the point "
        "found in reference cycles; left: what a full collection after the point still "
        "found (the runs in flight the point cancelled at its end among them); full "
        "collections: those during the point; RSS: growth over the point (Python keeps "
        "memory it freed).",
        "",
        "| a failed run's frames | failed runs/s | loop lag p99 ms | unreachable | left "
        "| full collections (each round), longest | RSS growth MiB | rounds |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for way, runs in measured.items():
        med = statistics.median
        longest = max((p for m in runs for p in m.full), default=0.0)
        each = "; ".join(describe(m) for m in runs)
        lines.append(
            f"| {way} | {med(m.failed_per_s for m in runs):.0f} "
            f"| {med(m.lag_p99 for m in runs) * 1000:.0f} "
            f"| {med(m.unreachable for m in runs):,.0f} | {med(m.left for m in runs):,.0f} "
            f"| {' / '.join(str(len(m.full)) for m in runs)}, {longest * 1000:.0f} ms "
            f"| {med(m.rss_growth_mib for m in runs):.0f} | {each} |"
        )
    return [*lines, ""]


def run() -> list[str]:
    return section(event_loop.run(rounds(), event_loop.loop_factory()))


if __name__ == "__main__":
    write(run())
