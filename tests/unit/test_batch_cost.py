"""A batch's cost: money spent stays spent (a retried task's), and an
unknown price is never 0."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from rich.console import Console

from agentwatch.runtime.batch import (
    BatchOptions,
    BatchProcessor,
    JsonlResultSink,
    Task,
    load_results,
)
from agentwatch.runtime.cli.batch import print_summary
from agentwatch.telemetry import Telemetry
from tests.unit.test_budget import priced_call


def unpriced_call(telemetry: Telemetry) -> None:
    with telemetry.llm_call("my-own-llm", "vllm") as call:
        call.set_response(input_tokens=10, output_tokens=5)


async def test_a_retried_tasks_earlier_cost_stays_in_the_batchs_total(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    attempts: list[str] = []

    async def work(task: Task) -> str:
        attempts.append(task.id)
        priced_call(telemetry)  # $0.15, billed whether the task then fails or not
        if len(attempts) == 1:
            raise RuntimeError("flaky")
        return task.id

    tasks = [Task("t0", "q")]
    first = await BatchProcessor(work, telemetry, sink=JsonlResultSink(out)).run(tasks)
    assert first.counts == {"failed": 1}
    assert first.cost_usd == pytest.approx(0.15)

    options = BatchOptions(retry_failed=True, budget_usd=0.25)
    again = await BatchProcessor(work, telemetry, options, sink=JsonlResultSink(out)).run(tasks)
    assert again.retried == 1
    assert again.cost_usd == pytest.approx(0.30)  # both attempts were paid for
    assert again.budget_exceeded
    records = await asyncio.to_thread(load_results, out)
    assert records["t0"]["cost_usd"] == pytest.approx(0.30)  # the ledger keeps both

    # the budget counts the ledger: a third run with the same budget starts nothing
    third = await BatchProcessor(work, telemetry, options, sink=JsonlResultSink(out)).run(tasks)
    assert third.cost_usd == pytest.approx(0.30)
    assert attempts == ["t0", "t0"]


async def test_a_batch_with_nothing_priced_has_no_cost_never_0(
    telemetry: Telemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    async def work(task: Task) -> str:
        unpriced_call(telemetry)
        return task.id

    summary = await BatchProcessor(work, telemetry).run([Task("t0", "q"), Task("t1", "q")])
    assert summary.total_usd is None
    assert summary.unpriced_calls == 2
    print_summary(summary, Path("out.jsonl"), Console(width=200))
    printed = capsys.readouterr().out
    assert "cost - (2 call(s) unpriced)" in printed
    assert "$0.000000" not in printed


async def test_a_batch_mixing_priced_and_unpriced_calls_says_it_is_partial(
    telemetry: Telemetry,
) -> None:
    async def work(task: Task) -> str:
        if task.id == "t0":
            priced_call(telemetry)
        else:
            unpriced_call(telemetry)
        return task.id

    summary = await BatchProcessor(work, telemetry).run([Task("t0", "q"), Task("t1", "q")])
    assert summary.total_usd == pytest.approx(0.15)
    assert summary.unpriced_calls == 1
