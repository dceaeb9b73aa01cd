"""Admission's trade-off at issue 18's point (1 s model, 400 clients): runs/s, event-loop
lag p99 and the loop's CPU a run against the runs in flight, and the adaptive limit at
its default target (50 ms) and at 100 ms beside them.

Every limit is a point on one curve of this machine: more runs in flight buy throughput
until the loop's CPU is spent, and past some point every run more is lag. The machine's
speed drifts by up to a third between minutes here, more than the margins read off the
curve, so everything is measured in one runtime, switched live, slice after slice, in
passes (every other pass backwards): its clients pass a gate of the bench's letting
``depth`` of them run at once, the runtime's admission set to no limit; or all of them
pass and the admission is adaptive again, one ``AdaptiveLimit`` a target, each going on
from where its last slice left it (as in a service that runs for hours; they climb from
64 in the warm-up), each between the depths nearest its own (switched to right after no
limit, the drain of 400 runs' lag cut it). Within a pass every slice shares the
machine's speed of that minute: each slice's runs/s is taken over its pass's no-limit
slice (all 400 clients in flight), and the median of the passes' ratios shown.

``python -m benchmarks.bench_frontier`` writes its section into RESULTS.md (replacing
the one there), as ``make bench`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass
from types import TracebackType

from agentwatch.runtime.agents.admission import Admission
from agentwatch.runtime.agents.concurrency import AdaptiveLimit, AdaptivePolicy
from agentwatch.runtime.cli import event_loop
from agentwatch.telemetry import sample_loop_lag

from .bench_admission import ISSUE_POINT, agent_at, model_process, p99, write

PASSES = 4
DEPTHS = (64, 128, 160, 200, 256)  # runs in flight; and every client: no limit
TARGETS = (0.05, 0.1)  # s, the adaptive limits'
SETTLE = 6.0  # s after a switch, not counted: the runs in flight fill or drain (a run 2-5 s)
ADAPTIVE_SETTLE = 10.0  # s: and the adaptive limit answers the drain's lag, then regrows
SLICE = 10.0  # s counted
WARMUP = 20.0  # s each adaptive limit climbs from 64, before the first pass
NO_LIMIT = "no limit"
TITLE = "## 11b. Admission: lag against throughput at 1 s model latency, 400 clients"


class Gate:
    """At most ``depth`` clients inside at once; the rest wait their turn."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.inside = 0
        self._changed = asyncio.Condition()

    async def set(self, depth: int) -> None:
        async with self._changed:
            self.depth = depth
            self._changed.notify_all()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.inside < self.depth)
            self.inside += 1

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        async with self._changed:
            self.inside -= 1
            self._changed.notify()


@dataclass(frozen=True)
class Slice:
    policy: str  # a depth, NO_LIMIT, or an adaptive target's name
    runs_per_s: float
    lag_p99: float
    busy: float  # the loop thread's CPU share
    cpu_per_run: float  # s of the loop thread's CPU a finished run
    failed: int  # runs that failed in the slice
    limit: int | None  # the admission's at the slice's end


def adaptive_name(target: float) -> str:
    return f"adaptive, target {target * 1000:.0f} ms"


def admit(admission: Admission, limit: AdaptiveLimit | None) -> None:
    """The admission adaptive with ``limit`` (its own state kept), or none (None)."""
    admission.close()  # the lag sampler stops, the limit pauses; the next run starts it
    admission.adaptive = limit


async def curve(base_url: str, clients: int) -> list[list[Slice]]:
    """The passes through the depths, no limit and the adaptive limits: one runtime."""
    done = failed = 0
    lags: list[float] = []
    gate = Gate(clients)
    adaptive = {adaptive_name(t): AdaptiveLimit(AdaptivePolicy(target_lag=t)) for t in TARGETS}
    passes: list[list[Slice]] = []
    async with agent_at(base_url, None) as (agent, _):

        async def client(i: int) -> None:
            nonlocal done, failed
            for n in range(1_000_000):  # bounded: the last pass ends it first
                async with gate:
                    try:
                        await agent.arun(f"what is {i} + {n}")
                    except Exception:
                        failed += 1  # none is expected: shown in the section
                    else:
                        done += 1

        async def switch(policy: str) -> float:
            """To ``policy``; the seconds it is given before it is counted."""
            limit = adaptive.get(policy)
            admit(agent.admission, limit)
            await gate.set(clients if limit is not None or policy == NO_LIMIT else int(policy))
            return ADAPTIVE_SETTLE if limit is not None else SETTLE

        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(client(i)) for i in range(clients)]
        sampler = loop.create_task(sample_loop_lag(lambda _now, lag: lags.append(lag)))
        current = NO_LIMIT
        for current in adaptive:
            await switch(current)
            await asyncio.sleep(WARMUP)
        # each adaptive limit between the depths nearest its own (~150-190 and ~230 runs
        # in flight): switched to right after no limit, the drain of 400 runs' lag cut it
        a50, a100 = adaptive
        policies = ("64", "128", "160", a50, "200", a100, "256", NO_LIMIT)
        for number in range(PASSES):
            measured = []
            for policy in policies if number % 2 == 0 else policies[::-1]:
                if policy != current:  # a pass starts where the last one ended
                    await asyncio.sleep(await switch(policy))
                current = policy
                lags.clear()
                before, lost = done, failed
                started, cpu = time.perf_counter(), time.thread_time()
                await asyncio.sleep(SLICE)
                took, cpu = time.perf_counter() - started, time.thread_time() - cpu
                runs = done - before
                measured.append(
                    Slice(
                        policy,
                        runs / took,
                        p99(lags),
                        cpu / took,
                        cpu / max(runs, 1),
                        failed - lost,
                        agent.admission.limit,
                    )
                )
                print(f"pass {number}: {measured[-1]}", flush=True)
            passes.append(measured)
        for task in [*tasks, sampler]:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                await asyncio.gather(*tasks, sampler, return_exceptions=True)
        agent.admission.close()
    return passes


async def frontier() -> list[list[Slice]]:
    latency, clients = ISSUE_POINT
    async with model_process(latency) as base_url:
        return await curve(base_url, clients)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def section(passes: list[list[Slice]]) -> list[str]:
    clients = ISSUE_POINT[1]
    full = [next(s for s in p if s.policy == NO_LIMIT) for p in passes]
    names = {adaptive_name(t) for t in TARGETS}
    rows: list[Slice] = []
    shares: list[tuple[float, list[float], list[int | None]]] = []
    for policy in (*map(str, DEPTHS), NO_LIMIT, *map(adaptive_name, TARGETS)):
        at = [next(s for s in p if s.policy == policy) for p in passes]
        ratios = [s.runs_per_s / max(f.runs_per_s, 1e-9) for s, f in zip(at, full, strict=True)]
        rows.append(
            Slice(
                policy,
                _median([s.runs_per_s for s in at]),
                _median([s.lag_p99 for s in at]),
                _median([s.busy for s in at]),
                _median([s.cpu_per_run for s in at]),
                sum(s.failed for s in at),
                None,
            )
        )
        shares.append((_median(ratios), ratios, [s.limit for s in at]))
    lines = [
        TITLE,
        "",
        "As section 11 (the heap settled, the builtin model in its own process), in one "
        f"runtime, {clients} clients, switched live: a gate of the bench's letting that many "
        "runs be in flight at once (the admission set to no limit), or the adaptive limit of "
        f"each target going on from its last slice; {PASSES} passes through them in turn "
        f"(every other pass backwards; {SETTLE:g} s to fill or drain after a switch, "
        f"{ADAPTIVE_SETTLE:g} s for an adaptive limit, then {SLICE:g} s counted; each "
        f"adaptive limit first climbed from 64 over {WARMUP:g} s). Runs/s, lag p99, loop "
        "busy and the loop's CPU a run are medians of the passes; of no limit: the median "
        "of each pass's ratio to its own no-limit slice (a pass's slices share the "
        "machine's speed of its minutes; each pass's ratio shown). Runs that failed in the "
        f"slices: {sum(r.failed for r in rows)}.",
        "",
        "| runs in flight | runs/s | of no limit (each pass) | loop lag p99 ms | loop busy "
        "| loop CPU a run ms | limit at the slices' end |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row, (share, ratios, limits) in zip(rows, shares, strict=True):
        name = f"{clients} (no limit)" if row.policy == NO_LIMIT else row.policy
        ends = "/".join(str(n) for n in limits) if row.policy in names else ""
        lines.append(
            f"| {name} | {row.runs_per_s:.1f} | {share:.0%} ("
            + ", ".join(f"{r:.0%}" for r in ratios)
            + f") | {row.lag_p99 * 1000:.0f} | {row.busy:.0%} | {row.cpu_per_run * 1000:.1f} "
            f"| {ends} |"
        )
    depth = [(r, s[0]) for r, s in zip(rows, shares, strict=True) if r.policy.isdigit()]
    calm = [(r, share) for r, share in depth if r.lag_p99 <= TARGETS[0]]
    best = max(calm, key=lambda rs: rs[1], default=None)
    least = min(
        ((r, share) for r, share in depth if share >= 0.9),
        key=lambda rs: rs[0].lag_p99,
        default=None,
    )
    default = next(
        (r, share[0])
        for r, share in zip(rows, shares, strict=True)
        if r.policy == adaptive_name(TARGETS[0])
    )
    reading = "Reading: "
    reading += (
        f"the most a depth gave with lag p99 <= 50 ms is {best[1]:.0%} of no limit's runs/s "
        f"({best[0].policy} in flight, {best[0].lag_p99 * 1000:.0f} ms); "
        if best
        else "no depth kept lag p99 <= 50 ms; "
    )
    reading += (
        f"the least lag at >= 90% was {least[0].lag_p99 * 1000:.0f} ms ({least[0].policy} in "
        "flight); "
        if least
        else "no depth short of all the clients reached 90% of no limit's runs/s; "
    )
    reading += (
        f"the adaptive limit at its default target gave {default[1]:.0%} at lag p99 "
        f"{default[0].lag_p99 * 1000:.0f} ms."
    )
    return [*lines, "", reading, ""]


def run() -> list[str]:
    return section(event_loop.run(frontier(), event_loop.loop_factory()))


if __name__ == "__main__":
    write(run())
