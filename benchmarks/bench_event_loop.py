"""The event loop at issue 18's point (1 s model, 400 clients): asyncio's own against
uvloop's (what ``serve``, ``worker``, ``batch`` and ``run`` use by default,
runtime/cli/event_loop.py), each with the adaptive limit and with no limit.

Each point as bench_admission measures it, in a loop of its own kind (a fresh
``asyncio.Runner`` and model process each); rounds alternate the loops' order (a busy
minute of a shared machine falls on both); medians, the rounds' ratios beside them.

``python -m benchmarks.bench_event_loop`` writes its section into RESULTS.md (replacing
the one there), as ``make bench`` does.
"""

from __future__ import annotations

import statistics

from agentwatch.runtime.cli import event_loop
from agentwatch.runtime.cli.event_loop import AGENTWATCH_EVENT_LOOP, LoopFactory

from .bench_admission import ISSUE_POINT, Point, measure, median_of, model_process, write

ROUNDS = 3
TITLE = "## 11g. The event loop: asyncio's and uvloop's at 1 s model latency, 400 clients"
# each as AGENTWATCH_EVENT_LOOP names it (uvloop: refused where it is not installed)
LOOPS: dict[str, LoopFactory | None] = {
    name: event_loop.loop_factory({AGENTWATCH_EVENT_LOOP: name}) for name in ("asyncio", "uvloop")
}
POLICIES: dict[str, int | None] = {"adaptive": None, "no limit": 0}


async def point(policy: str) -> Point:
    latency, clients = ISSUE_POINT
    async with model_process(latency) as base_url:
        return await measure(base_url, policy, latency, clients, POLICIES[policy])


def rounds() -> dict[tuple[str, str], list[Point]]:
    measured: dict[tuple[str, str], list[Point]] = {}
    for i in range(ROUNDS):
        for loop in list(LOOPS) if i % 2 == 0 else list(LOOPS)[::-1]:
            for policy in POLICIES:
                measured_point = event_loop.run(point(policy), LOOPS[loop])
                measured.setdefault((loop, policy), []).append(measured_point)
                print(
                    f"{loop}, {policy}: {measured_point.runs_per_s:.1f} runs/s, lag p99 "
                    f"{measured_point.lag_p99 * 1000:.0f} ms, limit {measured_point.limit}, "
                    f"loop busy {measured_point.busy:.0%}",
                    flush=True,
                )
    return measured


def cpu_per_run(p: Point) -> float:
    """The loop thread's CPU milliseconds a finished run took."""
    return p.busy / max(p.runs_per_s, 1e-9) * 1000


def section(measured: dict[tuple[str, str], list[Point]]) -> list[str]:
    lines = [
        TITLE,
        "",
        f"As section 11 (the heap settled, the builtin model in its own process), {ROUNDS} "
        "rounds, the loops' order alternating; medians. Loop CPU a run: the loop thread's "
        "CPU over the window per run finished.",
        "",
        "| loop | policy | runs/s | loop lag p99 ms | loop busy | loop CPU a run ms "
        "| adaptive limit at end | rounds: runs/s @ lag ms |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for (loop, policy), points in measured.items():
        m = median_of(points)
        each = ", ".join(f"{p.runs_per_s:.1f} @ {p.lag_p99 * 1000:.0f}" for p in points)
        cpu = statistics.median(cpu_per_run(p) for p in points)
        limit = "" if m.limit is None else str(m.limit)
        lines.append(
            f"| {loop} | {policy} | {m.runs_per_s:.1f} | {m.lag_p99 * 1000:.0f} | "
            f"{m.busy:.0%} | {cpu:.1f} | {limit} | {each} |"
        )

    def ratios(a: tuple[str, str], b: tuple[str, str]) -> str:
        pairs = zip(measured[a], measured[b], strict=True)
        each = [x.runs_per_s / max(y.runs_per_s, 1e-9) for x, y in pairs]
        listed = ", ".join(f"{r:.0%}" for r in each)
        return f"{statistics.median(each):.0%} ({listed})"

    reading = (
        "Reading: adaptive's runs/s over no limit's in the same loop and round: asyncio "
        f"{ratios(('asyncio', 'adaptive'), ('asyncio', 'no limit'))}, uvloop "
        f"{ratios(('uvloop', 'adaptive'), ('uvloop', 'no limit'))}; uvloop's over "
        f"asyncio's, adaptive {ratios(('uvloop', 'adaptive'), ('asyncio', 'adaptive'))}, "
        f"no limit {ratios(('uvloop', 'no limit'), ('asyncio', 'no limit'))}."
    )
    return [*lines, "", reading, ""]


def run() -> list[str]:
    return section(rounds())


if __name__ == "__main__":
    write(run())
