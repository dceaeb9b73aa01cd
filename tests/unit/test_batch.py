"""The batch processor: priorities, limits, outcomes, metrics, resumable results."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.runtime.batch import (
    BatchInputError,
    BatchOptions,
    BatchProcessor,
    ResultStore,
    Task,
    TaskStatus,
    load_results,
    read_tasks,
)
from agentwatch.telemetry import Telemetry


def value(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    return registry.get_sample_value(name, labels or {}) or 0.0


async def test_one_worker_runs_in_priority_order_fifo_within_a_priority(
    telemetry: Telemetry,
) -> None:
    finished: list[str] = []

    async def work(task: Task) -> str:
        await asyncio.sleep(0)
        finished.append(task.id)
        return task.id

    tasks = [Task(f"p{p}-{i}", "q", p) for i in range(3) for p in (5, 1, 9, 0)]
    summary = await BatchProcessor(work, telemetry, BatchOptions(workers=1)).run(tasks)
    assert finished == [f"p{p}-{i}" for p in (0, 1, 5, 9) for i in range(3)]
    assert summary.counts == {"completed": 12}


async def test_outcomes_are_counted_by_status(
    telemetry: Telemetry, registry: CollectorRegistry, exporter: InMemorySpanExporter
) -> None:
    async def work(task: Task) -> str:
        if task.id == "bad":
            raise ValueError("broken input")
        if task.id == "slow":
            await asyncio.Event().wait()  # only the task timeout ends it
        return "ok"

    tasks = [Task("good", "q"), Task("bad", "q"), Task("slow", "q")]
    processor = BatchProcessor(work, telemetry, BatchOptions(workers=3, task_timeout=0.05))
    summary = await processor.run(tasks)
    assert summary.counts == {"completed": 1, "failed": 1, "timed_out": 1}
    assert processor.tasks["bad"].error == "ValueError: broken input"
    assert processor.tasks["slow"].error == "timed out after 0.05 s"
    for status in ("completed", "failed", "timed_out"):
        assert value(registry, "agentwatch_batch_tasks_total", {"status": status}) == 1
    assert value(registry, "agentwatch_batch_tasks_in_progress") == 0
    spans = exporter.get_finished_spans()
    batch = next(s for s in spans if s.name == "batch")
    children = [s for s in spans if s.name == "batch_task"]
    assert len(children) == 3
    for child in children:
        assert child.parent is not None
        assert child.parent.span_id == batch.context.span_id
        assert (child.attributes or {})["agentwatch.batch.id"] == processor.batch_id
    statuses = {
        (c.attributes or {})["agentwatch.task.id"]: (c.attributes or {})["agentwatch.task.status"]
        for c in children
    }
    assert statuses == {"good": "completed", "bad": "failed", "slow": "timed_out"}


async def test_duplicate_ids_are_refused_before_anything_runs(telemetry: Telemetry) -> None:
    ran: list[str] = []

    async def work(task: Task) -> None:
        ran.append(task.id)

    with pytest.raises(BatchInputError, match="duplicate id 'a'"):
        await BatchProcessor(work, telemetry).run([Task("a", "q"), Task("b", "q"), Task("a", "r")])
    assert ran == []


async def test_concurrency_limit_holds(telemetry: Telemetry) -> None:
    running, peak = 0, 0

    async def work(task: Task) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(3):
            await asyncio.sleep(0)
        running -= 1

    options = BatchOptions(workers=8, concurrency=3)
    await BatchProcessor(work, telemetry, options).run([Task(str(i), "q") for i in range(40)])
    assert peak == 3


async def test_queue_wait_and_depth_with_controlled_timings(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    now = [100.0]
    depth_seen: list[float] = []
    work_time = {"a": 2.0, "b": 3.0, "c": 0.5}

    async def work(task: Task) -> None:
        depth_seen.append(value(registry, "agentwatch_batch_queue_depth"))
        assert value(registry, "agentwatch_batch_tasks_in_progress") == 1
        now[0] += work_time[task.id]

    tasks = [Task("a", "q", 1), Task("b", "q", 1), Task("c", "q", 2)]
    processor = BatchProcessor(work, telemetry, BatchOptions(workers=1), clock=lambda: now[0])
    await processor.run(tasks)
    assert depth_seen == [2, 1, 0]
    waits = {
        p: value(registry, "agentwatch_batch_queue_wait_seconds_sum", {"priority": p})
        for p in ("1", "2")
    }
    assert waits == {"1": 0.0 + 2.0, "2": 5.0}  # a waits 0, b waits 2, c waits 5
    assert value(registry, "agentwatch_batch_queue_depth") == 0


async def test_draining_one_batch_leaves_the_others_queue_depth(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    release = asyncio.Event()

    async def work(task: Task) -> None:
        await release.wait()

    first = BatchProcessor(work, telemetry, BatchOptions(workers=1))
    second = BatchProcessor(work, telemetry, BatchOptions(workers=1))
    runs = [
        asyncio.create_task(first.run([Task(f"a{i}", "q") for i in range(4)])),
        asyncio.create_task(second.run([Task(f"b{i}", "q") for i in range(5)])),
    ]
    for _ in range(100):  # bounded: until both workers hold a task
        if value(registry, "agentwatch_batch_tasks_in_progress") == 2:
            break
        await asyncio.sleep(0)
    assert value(registry, "agentwatch_batch_queue_depth") == 3 + 4
    first.drain()
    assert value(registry, "agentwatch_batch_queue_depth") == 4  # the second batch's queue
    release.set()
    await asyncio.gather(*runs)
    assert value(registry, "agentwatch_batch_queue_depth") == 0


async def test_cancel_one_running_task_and_drain(telemetry: Telemetry) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def work(task: Task) -> str:
        if task.id == "stuck":
            started.set()
            await asyncio.Event().wait()
        await release.wait()
        return "ok"

    processor = BatchProcessor(work, telemetry, BatchOptions(workers=2))
    tasks = [Task("stuck", "q", 0), Task("busy", "q", 0)] + [
        Task(f"later{i}", "q", 5) for i in range(5)
    ]
    run = asyncio.create_task(processor.run(tasks))
    await started.wait()
    processor.cancel("stuck")
    processor.drain()  # the queued ones are not taken; "busy" finishes
    release.set()
    summary = await run
    assert processor.tasks["stuck"].status is TaskStatus.CANCELLED
    assert processor.tasks["busy"].status is TaskStatus.COMPLETED
    assert summary.counts == {"cancelled": 6, "completed": 1}


async def test_results_resume_and_each_id_is_written_once(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    calls: list[str] = []

    async def work(task: Task) -> str:
        calls.append(task.id)
        return task.query.upper()

    first = [Task(str(i), f"q{i}") for i in range(10)]
    await BatchProcessor(work, telemetry, store=ResultStore(out, flush_every=3)).run(first[:6])
    summary = await BatchProcessor(work, telemetry, store=ResultStore(out)).run(first)
    assert summary.skipped == 6
    assert sorted(calls) == sorted(str(i) for i in range(10))  # nothing ran twice
    lines = out.read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(str(i) for i in range(10))


def test_a_torn_last_line_is_cut_off(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    good = json.dumps({"id": "a", "status": "completed"}) + "\n"
    out.write_text(good + '{"id": "b", "stat')
    assert list(load_results(out)) == ["a"]
    assert out.read_text() == good


def test_bad_input_lines_are_reported_with_numbers(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        '{"id": "a", "query": "x"}\n'
        "not json\n"
        "\n"
        '{"id": "b", "query": "", "priority": 1}\n'
        '{"id": "c", "query": "x", "priority": "high"}\n'
        '{"id": "a", "query": "again"}\n'
    )
    with pytest.raises(BatchInputError) as bad:
        read_tasks(path)
    text = str(bad.value)
    assert "line 2:" in text
    assert "line 4: 'query'" in text
    assert "line 5: 'priority'" in text
    path.write_text('{"id": "a", "query": "x"}\n{"id": "a", "query": "y"}\n')
    with pytest.raises(BatchInputError, match="duplicate id 'a'"):
        read_tasks(path)
