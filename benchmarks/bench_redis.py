"""Batch throughput on Redis with 1, 2 and 4 `agentwatch worker` processes.

A private redis-server (loopback, no persistence); N workers, each with its own builtin
model, started and ready before the clock starts; then `agentwatch batch --redis` with
the tasks, timed from its start to its exit (every result fsynced in the file). Two
loads: zero-latency tasks (CPU-bound: the agent, LangChain, the builtin model, Redis and
the producer share this machine's cores) and tasks whose model answers after 1 s
(I/O-bound: the workers' concurrency bounds the rate). ``python -m
benchmarks.bench_redis`` runs this file alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.redis_helpers import AGENTWATCH, redis_server, workers, write_tasks

LOADS = (  # name, tasks, builtin model latency (s), concurrency per worker
    ("zero latency", 400, "0", 8),
    ("1 s model latency", 240, "1.0", 40),
)
WORKER_COUNTS = (1, 2, 4)


def one_batch(url: str, tasks: int, latency: str, count: int, concurrency: int) -> float:
    """Tasks per second of one batch worked by ``count`` fresh workers."""
    env_extra = {"AGENTWATCH_BUILTIN_LATENCY": latency}
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "tasks.jsonl", Path(tmp) / "results.jsonl"
        write_tasks(path, tasks)
        with workers(url, count, concurrency, **env_extra) as pool:
            for worker in pool:
                worker.wait_ready()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_"))}
            env["OTEL_TRACES_EXPORTER"] = "none"
            start = time.perf_counter()
            done = subprocess.run(
                [*AGENTWATCH, "batch", str(path), "--out", str(out), "--redis", url],
                env=env,
                capture_output=True,
                timeout=900,
                check=False,
            )
            elapsed = time.perf_counter() - start
        assert done.returncode == 0, done.stderr.decode()[-1000:]
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert len({r["id"] for r in records}) == tasks == len(records)
    return tasks / elapsed


def run() -> list[str]:
    lines = [
        "## 13. Batch on Redis: 1, 2 and 4 worker processes",
        "",
        "`agentwatch batch --redis` with N `agentwatch worker` processes (each its own "
        "builtin model), a private redis-server, all on this machine; timed from the "
        "producer's start (its ~3 s of start-up included) to its exit (every result in the "
        "file), the workers started and ready before. `python -m benchmarks.bench_redis`.",
        "",
        "| load | tasks | concurrency / worker | 1 worker | 2 workers | 4 workers |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    with redis_server() as server:
        for name, tasks, latency, concurrency in LOADS:
            rates = []
            for count in WORKER_COUNTS:
                rate = one_batch(server.url, tasks, latency, count, concurrency)
                print(f"{name}: {count} worker(s): {rate:.1f} tasks/s", file=sys.stderr)
                rates.append(rate)
            cells = " | ".join(f"{r:.1f}/s ({r / rates[0]:.2f}x)" for r in rates)
            lines.append(f"| {name} | {tasks} | {concurrency} | {cells} |")
    lines += [
        "",
        f"Machine: {os.cpu_count()} cores shared by every process above (workers, their "
        "models, Redis, the producer); CPU-bound work cannot scale past the cores.",
        "",
    ]
    return lines


if __name__ == "__main__":
    print("\n".join(run()))
