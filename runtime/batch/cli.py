"""``agentwatch batch tasks.jsonl --workers 5 --out results.jsonl [--timeout S]``."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from agentwatch.telemetry import Telemetry

from ..runtime import AgentRuntime
from ..settings import RuntimeSettings
from .processor import BatchOptions, BatchProcessor, BatchSummary
from .store import ResultStore
from .task import Task, TaskStatus


async def run_batch(
    tasks: list[Task],
    out: Path,
    options: BatchOptions,
    settings: RuntimeSettings,
    telemetry: Telemetry,
    console: Console,
) -> tuple[BatchSummary, bool]:
    """Run ``tasks`` with the agent, results to ``out``; True if it was stopped early."""
    async with AgentRuntime(settings, telemetry) as runtime:
        agent = runtime.agent

        async def work(task: Task) -> dict[str, Any]:
            return (await agent.arun(task.query)).to_dict()

        failed = {"n": 0}
        with Progress(
            TextColumn("[bold]batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("failed {task.fields[failed]}"),
            TextColumn("{task.fields[rate]:.1f}/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as progress:
            bar = progress.add_task("batch", total=len(tasks), failed=0, rate=0.0)
            loop = asyncio.get_running_loop()
            started = loop.time()

            def on_progress(task: Task) -> None:
                if task.status in (TaskStatus.FAILED, TaskStatus.TIMED_OUT):
                    failed["n"] += 1
                done = progress.tasks[0].completed + 1
                rate = done / max(loop.time() - started, 1e-9)
                progress.update(bar, advance=1, failed=failed["n"], rate=rate)

            processor = BatchProcessor(
                work, telemetry, options, store=ResultStore(out), on_progress=on_progress
            )
            stopped = _install_signals(loop, processor, console)
            try:
                summary = await processor.run(tasks)
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            progress.update(bar, completed=len(tasks))
    return summary, stopped["yes"]


def _install_signals(
    loop: asyncio.AbstractEventLoop, processor: BatchProcessor, console: Console
) -> dict[str, bool]:
    """First SIGTERM/SIGINT: drain (finish what runs, write it); second: cancel all."""
    state = {"yes": False}

    def on_signal(name: str) -> None:
        if state["yes"]:
            console.print(f"[red]{name} again: cancelling the running tasks[/red]")
            processor.cancel()
            return
        state["yes"] = True
        console.print(f"[yellow]{name}: draining; running tasks finish, results are kept[/yellow]")
        processor.drain()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    return state


def print_summary(summary: BatchSummary, out: Path, console: Console) -> None:
    counts = ", ".join(f"{status} {n}" for status, n in sorted(summary.counts.items()))
    console.print(f"batch {summary.batch_id}: {counts} (skipped, already done: {summary.skipped})")
    console.print(
        f"wall time {summary.wall_time:.2f} s; task time p50 {summary.percentile(0.5):.3f} s, "
        f"p95 {summary.percentile(0.95):.3f} s; results in {out}"
    )


def stderr_console() -> Console:
    return Console(file=sys.stderr)
