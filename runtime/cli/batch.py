"""``agentwatch batch tasks.jsonl --workers 5 --out results.jsonl [--timeout S]
[--budget-usd USD]``.

Exit codes (the table of ``agentwatch --help``): 0 every task completed; 2 the tasks file
cannot be used; 3 stopped early by SIGINT/SIGTERM or by the budget (finished results
kept, rerun to resume); 4 finished, but some tasks failed or timed out (``--retry-failed`` runs them
again); 7 the results file cannot be used (not a regular file, its directory missing,
the tasks file itself, in use by another batch, a write failed).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Final

from rich.console import Console

from agentwatch.telemetry import Telemetry, setup_telemetry

from ..agents.agent_runtime import AgentRuntime
from ..batch.jsonl_sink import JsonlResultSink, ResultFileError, check_results_path
from ..batch.processor import MAX_WORKERS, BatchOptions, BatchProcessor, BatchSummary
from ..batch.task import RETRYABLE, BatchInputError, Task, TaskStatus, read_tasks
from ..settings import RuntimeSettings
from . import event_loop
from .exits import EXIT_OK, EXIT_RESULTS_FILE, EXIT_STOPPED, EXIT_TASKS_FAILED, EXIT_USAGE
from .heap import settle_heap
from .progress import agent_work, install_signals, progress_bar
from .redis_batch import run_redis_batch

BATCH_EPILOG: Final = f"""\
tasks: one JSON object a line, {{"id": "a", "query": "...", "priority": 5}}; "input" may
stand for "query" (not both); priority is optional (lower runs first); other fields are
refused, and every bad line is reported before anything starts.

--out: a regular file in a directory that must exist (none is created), never the tasks
file itself (nor a link to it); --workers at most {MAX_WORKERS}, --concurrency at most --workers.

results: each finished task's record is on disk (fsynced) before it counts as done;
a rerun skips the tasks already in --out, so the file ends with each task's result
exactly once. Execution is at-least-once: a task running when the process died runs
again. With --retry-failed, failed and timed-out tasks run again and their new record
replaces the old one. A line of --out that is not a valid record is moved to
<out>.corrupt (with a warning naming it) and its task runs again.

cost: each record has cost_usd (what its model calls cost, null when unpriced) and the
summary the batch's total. --budget-usd: once the batch's tasks (those already in --out
included) cost that much, no task starts; running ones finish; exit 3.

exit codes:
  0  every task completed (or nothing to run: an empty tasks file, with a warning)
  2  the tasks file cannot be used (nothing started)
  3  stopped early by SIGINT/SIGTERM, or --budget-usd spent; finished results kept,
     rerun to resume
  4  finished, but some tasks failed or timed out (--retry-failed runs them again)
  7  --out cannot be used: not a regular file, its directory missing, the tasks file
     itself, in use by another batch, or a write failed (e.g. disk full); what was
     written is kept
"""


def batch_command(args: argparse.Namespace) -> int:
    """``agentwatch batch``: read and check the tasks and ``--out`` before anything
    starts, run the batch, print its summary; the exit code says how it ended."""
    loop = event_loop.loop_factory()  # a loop it cannot make refused before anything
    console = stderr_console()
    out = Path(args.out)
    try:
        tasks = read_tasks(Path(args.tasks))
    except BatchInputError as exc:
        console.print(f"agentwatch batch: {exc}\nThe batch did not start.", markup=False)
        return EXIT_USAGE
    except OSError as exc:
        error_line(console, f"cannot read {args.tasks}: {exc.strerror or exc}")
        return EXIT_USAGE
    try:
        # before anything starts: a pipe or device never hangs us, the tasks stay intact
        check_results_path(out, Path(args.tasks))
    except ResultFileError as exc:
        error_line(console, f"--out: {exc}")
        return EXIT_RESULTS_FILE
    if not tasks:
        console.print(
            f"agentwatch batch: warning: {args.tasks} has no tasks; nothing to run",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )
        return EXIT_OK
    options = BatchOptions(
        workers=args.workers,
        concurrency=args.concurrency,
        task_timeout=args.timeout,
        retry_failed=args.retry_failed,
        budget_usd=args.budget_usd,
    )
    telemetry = setup_telemetry()  # the commands' one export policy
    try:
        if args.redis:  # workers elsewhere run the tasks (redis_batch.py)
            running = run_redis_batch(tasks, out, options, args.redis, telemetry, console)
        else:
            running = run_batch(tasks, out, options, RuntimeSettings.from_env(), telemetry, console)
        summary, stopped = event_loop.run(running, loop)
    except ResultFileError as exc:  # in use by another batch, or a write failed
        error_line(console, f"{exc} (the batch stopped; what was written is kept)")
        return EXIT_RESULTS_FILE
    finally:
        telemetry.shutdown()  # AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT
    print_summary(summary, out, console)
    return exit_code(summary, stopped)


def exit_code(summary: BatchSummary, stopped: bool) -> int:
    """What the batch's end says to a script: stopped early, some tasks failed, or ok."""
    if stopped or summary.budget_exceeded:
        return EXIT_STOPPED
    if any(summary.counts.get(str(status), 0) for status in RETRYABLE):
        return EXIT_TASKS_FAILED
    return EXIT_OK


def error_line(console: Console, message: str) -> None:
    """One line on stderr, whatever its length and brackets (no wrap, no markup)."""
    console.print(f"agentwatch batch: {message}", style="red", markup=False, soft_wrap=True)


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
        settle_heap()  # this process's: start-up's objects out of the collector's reach
        unpriced = options.budget_usd is not None and runtime.agent.unpriced_budget()
        if unpriced:
            console.print(
                f"agentwatch batch: warning: {unpriced}",
                style="yellow",
                markup=False,
                soft_wrap=True,
            )
        with progress_bar(console, len(tasks)) as on_progress:
            processor = BatchProcessor(
                agent_work(runtime.agent),
                telemetry,
                options,
                sink=JsonlResultSink(out),
                on_progress=on_progress,
            )
            loop = asyncio.get_running_loop()
            stopped = install_signals(loop, processor.drain, processor.cancel, console)
            try:
                summary = await processor.run(tasks)
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
    return summary, stopped["yes"]


def _cost(summary: BatchSummary) -> str:
    """The batch's cost: "-" when no call was priced, the unpriced calls counted."""
    total = summary.total_usd
    shown = "-" if total is None else f"${total:.6f}"
    if summary.unpriced_calls:
        shown += f" ({summary.unpriced_calls} call(s) unpriced)"
    return shown


def print_summary(summary: BatchSummary, out: Path, console: Console) -> None:
    counts = ", ".join(f"{status} {n}" for status, n in sorted(summary.counts.items()))
    retried = f", run again: {summary.retried}" if summary.retried else ""
    console.print(
        f"batch {summary.batch_id}: {counts} (skipped, already done: {summary.skipped}{retried})",
        markup=False,
        soft_wrap=True,
    )
    console.print(
        f"wall time {summary.wall_time:.2f} s; task time p50 {summary.percentile(0.5):.3f} s, "
        f"p95 {summary.percentile(0.95):.3f} s; cost {_cost(summary)}; results in {out}",
        markup=False,
        soft_wrap=True,
    )
    if summary.budget_exceeded:
        unrun = summary.counts.get(str(TaskStatus.CANCELLED), 0)
        console.print(
            f"budget spent (${summary.cost_usd:.6f}): {unrun} task(s) not run. Run the same "
            "command with a larger --budget-usd to resume.",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )
    unfinished = sum(summary.counts.get(str(status), 0) for status in RETRYABLE)
    if unfinished:
        console.print(
            f"{unfinished} task(s) failed or timed out; their records are in {out}. "
            "Run the same command with --retry-failed to run them again.",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )


def stderr_console() -> Console:
    return Console(file=sys.stderr)
