"""``agentwatch serve`` with 1 and 2 worker processes on a CPU-bound load.

Each service runs in its own process tree (the builtin model at zero latency, in each
worker's own process: every run is CPU work), driven over loopback HTTP by a load
generator in a process of its own (aiohttp, keep-alive connections, a fixed number of
runs in flight). Rounds alternate between the two services, so a busy moment of the
machine falls on both; the ratio of each round is shown with the median.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp

RUNS = 600
IN_FLIGHT = 64
ROUNDS = 3
SERVE = (sys.executable, "-m", "agentwatch.runtime.cli", "serve")


@contextmanager
def _service(workers: int) -> Iterator[str]:
    """``agentwatch serve --workers N`` on a free loopback port; its base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_"))}
    env["OTEL_TRACES_EXPORTER"] = "none"
    env["AGENTWATCH_MAX_CONCURRENT_RUNS"] = "0"  # the processes, not admission, set the pace
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(
            [*SERVE, "--port", "0", "--workers", str(workers)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # "agentwatch serving on http://...:PORT with ..."
            if "serving on" not in line:
                out.seek(0)
                raise RuntimeError(f"serve --workers {workers} did not start: {out.read()!r}")
            yield line.split("serving on ", 1)[1].split(" ", 1)[0]
        finally:
            process.terminate()
            process.wait(timeout=60)


async def _drive(base: str, runs: int, in_flight: int) -> float:
    """Runs per second for ``runs`` runs, ``in_flight`` at a time."""
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = iter(range(in_flight))  # warm: a run on every connection

        async def lane() -> None:
            for i in queue:
                async with session.post(f"{base}/v1/runs", json={"input": f"what is {i} + 1"}) as r:
                    if r.status != 200:
                        raise RuntimeError(f"run {i}: {r.status} {await r.text()}")
                    await r.read()

        await asyncio.gather(*(lane() for _ in range(in_flight)))
        start = time.perf_counter()
        queue = iter(range(runs))
        await asyncio.gather(*(lane() for _ in range(in_flight)))
        return runs / (time.perf_counter() - start)


def _load(base: str) -> float:
    """The load generator in a process of its own (its CPU is not the service's)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_workers", "--drive", base],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return float(done.stdout.strip())


def run() -> list[str]:
    with _service(1) as one, _service(2) as two:
        rounds = [(_load(one), _load(two)) for _ in range(ROUNDS)]
    ratios = [b / a for a, b in rounds]
    lines = [
        "## serve --workers: 1 and 2 worker processes, CPU-bound",
        "",
        f"{RUNS} runs per round, {IN_FLIGHT} in flight over keep-alive connections, builtin",
        "model at zero latency in each worker, no admission limit, spans not exported; the",
        f"load generator in its own process; {ROUNDS} rounds, alternating.",
        "",
        "| round | 1 worker runs/s | 2 workers runs/s | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for i, (a, b) in enumerate(rounds, 1):
        lines.append(f"| {i} | {a:,.1f} | {b:,.1f} | {b / a:.2f}x |")
    lines += ["", f"Median ratio: **{statistics.median(ratios):.2f}x** (target >= 1.7x).", ""]
    return lines


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--drive":
        print(asyncio.run(_drive(sys.argv[2], RUNS, IN_FLIGHT)))
    else:
        print("\n".join(run()))
