"""Batch processor throughput.

1. Zero-latency tasks: the processor (priority queue, workers, semaphore, one span and
   the batch metrics per task) against a bare ``asyncio.Semaphore`` + ``gather``
   baseline, in one process. Target: at least 50% of the baseline's rate.
2. I/O-bound tasks: 1,000 HTTP requests over loopback to a server that answers each
   after 100 ms, at 100 workers. Ideal: 10 waves of 100 ms = 1.0 s. Target: < 1.2 s.
3. The results file: every record is on disk (``fdatasync``) before its task counts as
   done, records that finish together share one sync (group commit). Measured: tasks/s
   with and without a ``ResultStore`` for zero-latency tasks at 1 and 10 workers (one
   worker is the worst case: a sync per record), records per sync, and the I/O-bound
   batch above with a store. ``python -m benchmarks.bench_batch`` runs this file alone.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NoOpTracerProvider
from prometheus_client import CollectorRegistry

from agentwatch.runtime.batch import BatchOptions, BatchProcessor, ResultStore, Task
from agentwatch.telemetry import Telemetry

from .common import DiscardingExporter

ZERO_TASKS = 5_000
IO_TASKS = 1_000
IO_WORKERS = 100
IO_LATENCY = 0.1


async def _zero(task: Task) -> str:
    return task.id


async def baseline(tasks: list[Task], limit: int) -> float:
    semaphore = asyncio.Semaphore(limit)

    async def one(task: Task) -> str:
        async with semaphore:
            return await _zero(task)

    start = time.perf_counter()
    await asyncio.gather(*(one(t) for t in tasks))
    return len(tasks) / (time.perf_counter() - start)


async def processor_rate(
    tasks: list[Task], telemetry: Telemetry, workers: int, store: ResultStore | None = None
) -> float:
    start = time.perf_counter()
    await BatchProcessor(_zero, telemetry, BatchOptions(workers=workers), sink=store).run(tasks)
    return len(tasks) / (time.perf_counter() - start)


def _serve_slow(port: multiprocessing.Queue[int]) -> None:  # in its own process
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(IO_LATENCY)  # the backend's latency: what the batch waits on
        return web.json_response({"ok": True})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/slow", slow)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port.put(runner.addresses[0][1])
        await asyncio.sleep(600)  # bounded lifetime; the parent terminates it first

    asyncio.run(main())


async def io_batch(telemetry: Telemetry, store: ResultStore | None = None) -> float:
    """The backend runs in another process, as a real one would: the batch's loop does
    only the client side."""
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve_slow, args=(ports,), daemon=True)
    server.start()
    port = await asyncio.to_thread(ports.get, True, 30)
    url = f"http://127.0.0.1:{port}/slow"
    connector = aiohttp.TCPConnector(limit=IO_WORKERS)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:

            async def fetch(task: Task) -> int:
                async with session.get(url) as response:
                    await response.read()
                    return response.status

            await fetch(Task("warm", "q"))
            tasks = [Task(str(i), "q") for i in range(IO_TASKS)]
            start = time.perf_counter()
            options = BatchOptions(workers=IO_WORKERS)
            await BatchProcessor(fetch, telemetry, options, sink=store).run(tasks)
            return time.perf_counter() - start
    finally:
        server.terminate()
        server.join(10)


async def measure(trials: int = 5) -> list[str]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingExporter(), max_queue_size=8192))
    telemetry = Telemetry(tracer_provider=provider, registry=CollectorRegistry())
    untraced = Telemetry(tracer_provider=NoOpTracerProvider(), registry=CollectorRegistry())
    tasks = [Task(str(i), "q", i % 10) for i in range(ZERO_TASKS)]
    base, ours, quiet = [], [], []

    def fresh() -> list[Task]:
        return [Task(t.id, t.query, t.priority) for t in tasks]

    for _ in range(trials):
        base.append(await baseline(tasks, 10))
        ours.append(await processor_rate(fresh(), telemetry, 10))
        quiet.append(await processor_rate(fresh(), untraced, 10))
    io_times = [await io_batch(telemetry) for _ in range(3)]
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as directory:
        store_lines = await measure_store(telemetry, Path(directory))
    provider.shutdown()
    ratio = statistics.median(o / b for o, b in zip(ours, base, strict=True))
    io = statistics.median(io_times)
    return [
        "## 4. Batch processor throughput",
        "",
        f"Zero-latency tasks ({ZERO_TASKS:,} per trial, {trials} interleaved trials, 10 workers"
        " / a semaphore of 10):",
        "",
        "| variant | tasks/s (median) | range |",
        "|---|---:|---:|",
        f"| Semaphore + gather | {statistics.median(base):,.0f} | "
        f"{min(base):,.0f}-{max(base):,.0f} |",
        f"| BatchProcessor (span + metrics per task) | {statistics.median(ours):,.0f} | "
        f"{min(ours):,.0f}-{max(ours):,.0f} |",
        f"| BatchProcessor, tracing off (metrics only) | {statistics.median(quiet):,.0f} | "
        f"{min(quiet):,.0f}-{max(quiet):,.0f} |",
        "",
        f"Processor at {ratio:.0%} of the baseline (target >= 50%: "
        f"{'met' if ratio >= 0.5 else 'NOT met'}); with tracing off "
        f"{statistics.median(q / b for q, b in zip(quiet, base, strict=True)):.0%}. "
        "One span per task (~15-20 µs here) alone costs more than the whole baseline task "
        "(~6-8 µs), so 50% cannot be reached while every task is traced.",
        "",
        f"I/O-bound: {IO_TASKS:,} HTTP requests to a loopback server answering after "
        f"{IO_LATENCY * 1000:.0f} ms, {IO_WORKERS} workers: {io:.3f} s median of 3 "
        f"({', '.join(f'{t:.3f}' for t in io_times)}); ideal 1.0 s, target < 1.2 s: "
        f"{'met' if io < 1.2 else 'NOT met'}.",
        "",
        *store_lines,
    ]


STORE_TASKS = 2_000


async def measure_store(telemetry: Telemetry, directory: Path, trials: int = 3) -> list[str]:
    """The cost of durable-before-reported results, on the disk under ``directory``."""
    rows = []
    for workers in (1, 10):
        bare, stored, per_sync = [], [], []
        for trial in range(trials):
            tasks = [Task(f"{trial}-{i}", "q") for i in range(STORE_TASKS)]
            bare.append(await processor_rate(tasks, telemetry, workers))
            store = ResultStore(directory / f"zero-{workers}-{trial}.jsonl")
            tasks = [Task(t.id, t.query) for t in tasks]
            stored.append(await processor_rate(tasks, telemetry, workers, store))
            per_sync.append(store.written / max(store.commits, 1))
        rows.append(
            f"| zero-latency, {workers} worker{'s' if workers > 1 else ''} | "
            f"{statistics.median(bare):,.0f} tasks/s | {statistics.median(stored):,.0f} tasks/s | "
            f"{statistics.median(per_sync):.1f} | "
            f"{1e6 / statistics.median(stored) - 1e6 / statistics.median(bare):,.0f} µs |"
        )
    io_bare, io_stored, io_per_sync = [], [], []
    for trial in range(5):  # interleaved: the machine's drift hits both alike
        io_bare.append(await io_batch(telemetry))
        store = ResultStore(directory / f"io-{trial}.jsonl")
        io_stored.append(await io_batch(telemetry, store))
        io_per_sync.append(store.written / max(store.commits, 1))
    bare_s, stored_s = statistics.median(io_bare), statistics.median(io_stored)
    return [
        "Results file (`ResultStore`): each record is written and `fdatasync`-ed before its "
        "task counts as done; records that finish while a sync runs share the next one "
        f"(group commit). Zero-latency rows: {STORE_TASKS:,} tasks per trial, median of "
        f"{trials}; I/O-bound row: median of 5 interleaved runs. ext4 on the machine's disk:",
        "",
        "| batch | no file | with file | records per sync | cost per task |",
        "|---|---:|---:|---:|---:|",
        *rows,
        f"| I/O-bound (above), {IO_WORKERS} workers | {bare_s:.3f} s "
        f"({min(io_bare):.3f}-{max(io_bare):.3f}) | {stored_s:.3f} s "
        f"({min(io_stored):.3f}-{max(io_stored):.3f}) | "
        f"{statistics.median(io_per_sync):.1f} | "
        f"{(stored_s - bare_s) / IO_TASKS * 1e6:,.0f} µs |",
        "",
        "What it buys: after a SIGKILL only the tasks the workers held at that moment "
        "(running, or finished and waiting for their sync: at most `--workers`) run again "
        "on resume; before, up to 64 finished records (or 0.5 s "
        "of them) sat in a buffer, were lost and ran again. Zero-latency tasks show the "
        "sync's full price (one worker: one sync per task); with 100 ms tasks it is "
        f"{(stored_s / bare_s - 1):+.0%} of the batch's wall time here, within the "
        "run-to-run spread shown in brackets.",
        "",
    ]


def run() -> list[str]:
    return asyncio.run(measure())


async def _store_only() -> list[str]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingExporter(), max_queue_size=8192))
    telemetry = Telemetry(tracer_provider=provider, registry=CollectorRegistry())
    try:
        with tempfile.TemporaryDirectory(prefix="bench-batch-") as directory:
            return await measure_store(telemetry, Path(directory))
    finally:
        provider.shutdown()


if __name__ == "__main__":
    print("\n".join(asyncio.run(_store_only())))
