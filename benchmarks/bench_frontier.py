"""Admission's trade-off at issue 18's point (1 s model, 400 clients): runs/s against
event-loop lag p99 for fixed limits from 64 to 256, the adaptive limit at its default
target (50 ms) and at 100 ms, and no limit.

Every limit is a point on one curve of this machine: more runs in flight buy throughput
until the loop's CPU is spent, and past some point every run more is lag. The fixed
limits draw the curve; the adaptive limits should sit on it at their targets. Rounds
alternate through the policies (a busy moment of a shared machine falls on all), each
point as bench_admission measures it; the medians are shown.

``python -m benchmarks.bench_frontier`` writes its section into RESULTS.md (replacing
the one there), as ``make bench`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentwatch.runtime.cli import event_loop

from .bench_admission import ISSUE_POINT, Point, measure, median_of, model_process, write

ROUNDS = 2
TITLE = "## 11b. Admission: lag against throughput at 1 s model latency, 400 clients"


@dataclass(frozen=True)
class Policy:
    name: str
    limit: int | None  # None: adaptive; 0: no limit
    target_lag: float = 0.05


POLICIES = (
    *(Policy(f"fixed {n}", n) for n in (64, 96, 128, 160, 200, 256)),
    Policy("adaptive, target 50 ms", None),
    Policy("adaptive, target 100 ms", None, 0.1),
    Policy("no limit", 0),
)


async def rounds() -> dict[str, list[Point]]:
    latency, clients = ISSUE_POINT
    measured: dict[str, list[Point]] = {p.name: [] for p in POLICIES}
    async with model_process(latency) as base_url:
        for _ in range(ROUNDS):
            for policy in POLICIES:
                point = await measure(
                    base_url, policy.name, latency, clients, policy.limit, policy.target_lag
                )
                print(
                    f"{policy.name}: {point.runs_per_s:.1f} runs/s, lag p99 "
                    f"{point.lag_p99 * 1000:.0f} ms, limit {point.limit}",
                    flush=True,
                )
                measured[policy.name].append(point)
    return measured


def section(measured: dict[str, list[Point]]) -> list[str]:
    unlimited = median_of(measured["no limit"]).runs_per_s or 1.0
    rows = []
    for policy in POLICIES:
        points = measured[policy.name]
        median = median_of(points)
        rate, lag = median.runs_per_s, median.lag_p99
        ends = "/".join(str(p.limit) for p in points) if policy.limit is None else ""
        rows.append((policy, rate, lag, ends))
    lines = [
        TITLE,
        "",
        "As section 11 (the heap settled, the builtin model in its own process), "
        f"{ROUNDS} rounds through the policies in turn; medians. Adaptive limits start "
        "at 64 in each point's warm-up; their limits at the windows' ends are shown.",
        "",
        "| policy | runs/s | of no limit | loop lag p99 ms | adaptive limit at end |",
        "|---|---:|---:|---:|---:|",
    ]
    for policy, rate, lag, ends in rows:
        lines.append(
            f"| {policy.name} | {rate:.1f} | {rate / unlimited:.0%} | {lag * 1000:.0f} | {ends} |"
        )
    calm = [(p, r) for p, r, lag, _ in rows if p.limit and lag <= 0.05]
    best = max(calm, key=lambda pr: pr[1], default=None)
    near = [(p, lag) for p, r, lag, _ in rows if p.limit and r >= 0.9 * unlimited]
    least = min(near, key=lambda pl: pl[1], default=None)
    reading = "Reading: "
    reading += (
        f"the most a fixed limit gave with lag p99 <= 50 ms is {best[1]:.1f} runs/s "
        f"({best[0].name}, {best[1] / unlimited:.0%} of no limit); "
        if best
        else "no fixed limit kept lag p99 <= 50 ms; "
    )
    reading += (
        f"the least lag at >= 90% of no limit's runs/s is {least[1] * 1000:.0f} ms "
        f"({least[0].name})."
        if least
        else "no fixed limit reached 90% of no limit's runs/s."
    )
    return [*lines, "", reading, ""]


def run() -> list[str]:
    return section(event_loop.run(rounds(), event_loop.loop_factory()))


if __name__ == "__main__":
    write(run())
