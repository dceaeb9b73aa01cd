"""What a batch's front-end shares, local or on Redis: the work (one agent run a task),
the progress bar, and the signals (first SIGTERM/SIGINT drains, the second cancels)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
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

from ..agents.agent import Agent
from ..batch.task import FINAL, RETRYABLE, Task


def agent_work(agent: Agent) -> Callable[[Task], Awaitable[dict[str, Any]]]:
    """What a batch task is: one run of the agent; its result as a record holds it."""

    async def work(task: Task) -> dict[str, Any]:
        return (await agent.arun(task.query)).to_dict()

    return work


@contextmanager
def progress_bar(console: Console, total: int) -> Iterator[Callable[[Task], None]]:
    """The batch's progress bar; yields the ``on_progress`` that advances it for every
    task with a final record (cancelled ones are not results)."""
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
        bar = progress.add_task("batch", total=total, failed=0, rate=0.0)
        started = time.monotonic()

        def on_progress(task: Task) -> None:
            if task.status not in FINAL:
                return  # the bar counts results in the file; cancelled ones are not
            if task.status in RETRYABLE:
                failed["n"] += 1
            done = progress.tasks[0].completed + 1
            rate = done / max(time.monotonic() - started, 1e-9)
            progress.update(bar, advance=1, failed=failed["n"], rate=rate)

        yield on_progress


def install_signals(
    loop: asyncio.AbstractEventLoop,
    drain: Callable[[], None],
    cancel: Callable[[], None],
    console: Console,
) -> dict[str, bool]:
    """First SIGTERM/SIGINT: drain (finish what runs, write it); second: cancel all."""
    state = {"yes": False}

    def on_signal(name: str) -> None:
        if state["yes"]:
            console.print(f"[red]{name} again: cancelling the running tasks[/red]")
            cancel()
            return
        state["yes"] = True
        console.print(f"[yellow]{name}: draining; running tasks finish, results are kept[/yellow]")
        drain()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    return state
