"""The batch processor: priorities, limits, outcomes, metrics, resumable results."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.runtime.batch import (
    BatchInputError,
    BatchOptions,
    BatchProcessor,
    JsonlResultSink,
    ResultFileError,
    ResultFileLocked,
    ResultWriteError,
    Task,
    TaskStatus,
    jsonl_sink,
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


async def test_tasks_cancelled_in_the_queue_are_counted(
    telemetry: Telemetry, registry: CollectorRegistry, exporter: InMemorySpanExporter
) -> None:
    started = asyncio.Event()

    async def work(task: Task) -> str:
        started.set()
        await asyncio.Event().wait()  # only cancel() ends it
        return "never"

    processor = BatchProcessor(work, telemetry, BatchOptions(workers=1))
    run = asyncio.create_task(processor.run([Task(str(i), "q", i) for i in range(6)]))
    await started.wait()
    processor.cancel()
    summary = await run
    assert summary.counts == {"cancelled": 6}
    # one started (and has a span), five never left the queue: all six counted
    assert value(registry, "agentwatch_batch_tasks_total", {"status": "cancelled"}) == 6
    assert len([s for s in exporter.get_finished_spans() if s.name == "batch_task"]) == 1
    assert value(registry, "agentwatch_batch_queue_depth") == 0


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(2000):  # bounded: polls for up to ~20 s (opening a store is a thread)
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_cancel_reaches_tasks_waiting_for_a_concurrency_slot(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    release = asyncio.Event()
    ran: list[str] = []

    async def work(task: Task) -> str:
        ran.append(task.id)
        await release.wait()
        return "ok"

    # 4 workers, 1 slot: "a" runs, "b", "c" and "d" are taken and wait for the slot
    processor = BatchProcessor(work, telemetry, BatchOptions(workers=4, concurrency=1))
    tasks = [Task(x, "q", i) for i, x in enumerate("abcdef")]
    run = asyncio.create_task(processor.run(tasks))
    await _until(lambda: value(registry, "agentwatch_batch_queue_depth") == 2, "4 tasks taken")
    assert ran == ["a"]
    processor.cancel("b")  # waiting for the slot: must not run
    await _until(lambda: processor.tasks["b"].status is TaskStatus.CANCELLED, "b cancelled")
    processor.cancel()  # the whole batch: c and d (waiting), e and f (queued), a (running)
    release.set()
    summary = await asyncio.wait_for(run, timeout=30)
    assert ran == ["a"]
    assert summary.counts == {"cancelled": 6}
    assert value(registry, "agentwatch_batch_tasks_total", {"status": "cancelled"}) == 6
    assert value(registry, "agentwatch_batch_tasks_in_progress") == 0


async def test_drain_does_not_start_tasks_waiting_for_a_slot(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    ran: list[str] = []

    async def work(task: Task) -> str:
        ran.append(task.id)
        started.set()
        await release.wait()
        return "ok"

    processor = BatchProcessor(work, telemetry, BatchOptions(workers=3, concurrency=1))
    run = asyncio.create_task(processor.run([Task(x, "q", i) for i, x in enumerate("abcd")]))
    await started.wait()
    await _until(lambda: value(registry, "agentwatch_batch_queue_depth") == 1, "3 tasks taken")
    processor.drain()
    release.set()
    summary = await asyncio.wait_for(run, timeout=30)
    assert ran == ["a"]
    assert summary.counts == {"completed": 1, "cancelled": 3}


async def test_cancelling_run_from_outside_ends_every_span_and_task(
    telemetry: Telemetry,
    registry: CollectorRegistry,
    exporter: InMemorySpanExporter,
    tmp_path: Path,
) -> None:
    started: list[str] = []

    async def work(task: Task) -> str:
        started.append(task.id)
        await asyncio.Event().wait()  # never finishes by itself
        return "never"

    store = JsonlResultSink(tmp_path / "results.jsonl")
    processor = BatchProcessor(work, telemetry, BatchOptions(workers=4, concurrency=2), sink=store)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):  # a caller's deadline around the whole batch
            await processor.run([Task(str(i), "q") for i in range(10)])
    assert sorted(started) == ["0", "1"]
    assert {t.status for t in processor.tasks.values()} == {TaskStatus.CANCELLED}
    spans = [s for s in exporter.get_finished_spans() if s.name == "batch_task"]
    assert sorted((s.attributes or {})["agentwatch.task.id"] for s in spans) == ["0", "1"]
    assert {(s.attributes or {})["agentwatch.task.status"] for s in spans} == {"cancelled"}
    assert [s.name for s in exporter.get_finished_spans()].count("batch") == 1
    assert value(registry, "agentwatch_batch_tasks_total", {"status": "cancelled"}) == 10
    assert value(registry, "agentwatch_batch_tasks_in_progress") == 0
    assert value(registry, "agentwatch_batch_queue_depth") == 0
    await JsonlResultSink(tmp_path / "results.jsonl").open()  # the lock was released


async def test_resume_skips_finished_tasks_and_each_result_is_in_the_file_once(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    calls: list[str] = []

    async def work(task: Task) -> str:
        calls.append(task.id)
        return task.query.upper()

    first = [Task(str(i), f"q{i}") for i in range(10)]
    await BatchProcessor(work, telemetry, sink=JsonlResultSink(out)).run(first[:6])
    summary = await BatchProcessor(work, telemetry, sink=JsonlResultSink(out)).run(first)
    assert summary.skipped == 6
    assert sorted(calls) == sorted(str(i) for i in range(10))  # nothing ran twice
    lines = out.read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(str(i) for i in range(10))


async def test_a_torn_last_line_is_cut_off(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    good = json.dumps({"id": "a", "status": "completed"}) + "\n"
    out.write_text(good + '{"id": "b", "stat')
    store = JsonlResultSink(out)
    done = await store.open()
    await store.close()
    assert list(done) == ["a"]
    assert out.read_text() == good
    assert not (tmp_path / "results.jsonl.corrupt").exists()  # a crash artefact, not data


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


# -- the results file -------------------------------------------------------------------


def record_line(task_id: str, status: str = "completed", **extra: object) -> str:
    return json.dumps({"id": task_id, "status": status, "result": task_id, **extra}) + "\n"


async def read_ids(path: Path) -> list[str]:
    text = await asyncio.to_thread(path.read_text)
    return [json.loads(line)["id"] for line in text.splitlines()]


async def test_a_task_is_reported_done_only_once_its_record_is_on_disk(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    reported: list[str] = []

    async def work(task: Task) -> str:
        on_disk = await read_ids(out)
        assert set(reported) <= set(on_disk), "reported done but not in the file"
        return task.id

    processor = BatchProcessor(
        work,
        telemetry,
        BatchOptions(workers=1),
        sink=JsonlResultSink(out),
        on_progress=lambda t: reported.append(t.id),
    )
    summary = await processor.run([Task(str(i), "q") for i in range(20)])
    assert summary.counts == {"completed": 20}
    assert sorted(await read_ids(out)) == sorted(reported)


async def test_records_that_finish_together_share_one_sync(
    telemetry: Telemetry, registry: CollectorRegistry, tmp_path: Path
) -> None:
    release = asyncio.Event()

    async def work(task: Task) -> str:
        await release.wait()
        return task.id

    store = JsonlResultSink(tmp_path / "results.jsonl")
    processor = BatchProcessor(work, telemetry, BatchOptions(workers=8), sink=store)
    run = asyncio.create_task(processor.run([Task(str(i), "q") for i in range(8)]))
    await _until(lambda: value(registry, "agentwatch_batch_tasks_in_progress") == 8, "8 running")
    release.set()  # all eight finish in the same loop turn
    await run
    assert store.written == 8
    assert store.commits < 8  # group commit: one sync wrote several records


async def test_a_failed_write_stops_the_batch_and_reports_nothing_unwritten(
    telemetry: Telemetry,
    registry: CollectorRegistry,
    exporter: InMemorySpanExporter,
    tmp_path: Path,
) -> None:
    out = tmp_path / "results.jsonl"
    store = JsonlResultSink(out)
    reported: list[Task] = []
    started: list[str] = []

    async def work(task: Task) -> str:
        if not started:  # the disk fills up: every write to the file now fails
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, store._fd or -1)
            os.close(full)
        started.append(task.id)
        await asyncio.sleep(0)
        return task.id

    processor = BatchProcessor(
        work, telemetry, BatchOptions(workers=2), sink=store, on_progress=reported.append
    )
    with pytest.raises(ResultWriteError) as failed:
        await asyncio.wait_for(processor.run([Task(str(i), "q") for i in range(50)]), 30)
    assert str(out) in str(failed.value)
    assert "No space left on device" in str(failed.value)
    assert len(started) <= 4  # stopped at the first failed write, not after 50 tasks
    assert [t for t in reported if t.status is TaskStatus.COMPLETED] == []
    assert TaskStatus.PROCESSING not in {t.status for t in processor.tasks.values()}
    assert value(registry, "agentwatch_batch_tasks_in_progress") == 0
    assert value(registry, "agentwatch_batch_queue_depth") == 0
    batch = next(s for s in exporter.get_finished_spans() if s.name == "batch")
    assert (batch.attributes or {})["error.type"] == "ResultWriteError"


async def test_a_corrupt_middle_line_keeps_every_valid_record(
    telemetry: Telemetry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "results.jsonl"
    lines = [record_line(x, trace_id=f"trace-{x}") for x in "abcdef"]
    lines[2] = '{"id": "c", "status": "compl\x00\n'  # damaged on disk, mid-file
    lines.insert(4, "garbage\n")
    out.write_text("".join(lines))
    ran: list[str] = []

    async def work(task: Task) -> str:
        ran.append(task.id)
        return task.id

    with caplog.at_level(logging.WARNING, logger="agentwatch.batch"):
        summary = await BatchProcessor(work, telemetry, sink=JsonlResultSink(out)).run(
            [Task(x, "q") for x in "abcdefg"]
        )
    assert sorted(ran) == ["c", "g"]  # only the damaged one and the new one
    assert summary.skipped == 5
    kept = out.read_text().splitlines(keepends=True)
    for x in "abdef":  # every valid record unchanged, byte for byte
        assert record_line(x, trace_id=f"trace-{x}") in kept
    assert sorted(await read_ids(out)) == list("abcdefg")
    corrupt = (tmp_path / "results.jsonl.corrupt").read_text()
    assert corrupt == '{"id": "c", "status": "compl\x00\ngarbage\n'
    assert "line 3 (not JSON), 5 (not JSON)" in caplog.text


async def test_a_status_that_is_not_a_string_is_a_corrupt_line(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    bad = '{"id": "x", "status": []}\n{"id": "y", "status": {"a": 1}}\n'
    out.write_text(record_line("a") + bad)
    store = JsonlResultSink(out)
    done = await store.open()  # the old code: TypeError (unhashable), nothing could run
    await store.close()
    assert list(done) == ["a"]
    assert (tmp_path / "results.jsonl.corrupt").read_text() == bad


async def test_lines_read_back_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonl_sink, "MAX_LINE_BYTES", 200)
    out = tmp_path / "results.jsonl"
    huge = record_line("big", pad="x" * 1000)
    out.write_text(record_line("a") + huge + record_line("b") + '{"id": "c", "pad": "' + "y" * 500)
    store = JsonlResultSink(out)
    done = await store.open()
    await store.close()
    assert sorted(done) == ["a", "b"]
    assert out.read_text() == record_line("a") + record_line("b")
    assert (tmp_path / "results.jsonl.corrupt").read_text() == huge
    await store.open()
    try:
        with pytest.raises(ValueError, match="too large"):  # it could not be read back
            await store.add({"id": "d", "status": "completed", "result": "z" * 500})
    finally:
        await store.close()


async def test_a_second_writer_on_the_same_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    first = JsonlResultSink(out)
    await first.open()
    try:
        with pytest.raises(ResultFileLocked, match="in use by another batch"):
            await JsonlResultSink(out).open()
    finally:
        await first.close()
    second = JsonlResultSink(out)
    await second.open()  # free again once the first closed
    await second.close()


@pytest.mark.parametrize("where", ["directory", "/dev/full", "/dev/null"])
async def test_results_go_to_a_regular_file_only(tmp_path: Path, where: str) -> None:
    path = tmp_path if where == "directory" else Path(where)
    with pytest.raises(ResultFileError, match=r"directory|not a regular file"):
        await JsonlResultSink(path).open()


async def test_the_last_record_of_an_id_wins_and_the_file_is_compacted(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"  # a crash after a retry's record, before compaction
    out.write_text(record_line("a", "failed") + record_line("b") + record_line("a"))
    assert (await asyncio.to_thread(load_results, out))["a"]["status"] == "completed"
    store = JsonlResultSink(out)
    await store.open()
    await store.close()
    assert out.read_text() == record_line("b") + record_line("a")
    assert not (tmp_path / "results.jsonl.corrupt").exists()


def test_long_task_lines_are_refused_without_reading_them_whole(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    long_line = json.dumps({"id": "big", "query": "x" * 20_000_000}) + "\n"  # ~20 MB
    path.write_text('{"id": "a", "query": "x"}\n' + long_line + '{"id": "b", "query": "y"}\n')
    tracemalloc.start()
    try:
        with pytest.raises(BatchInputError) as bad:
            read_tasks(path, max_line_bytes=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(bad.value).splitlines()[1:] == ["  line 2: longer than 1000 bytes"]
    assert peak < 2_000_000  # the 20 MB line was never held whole


async def test_a_results_file_behind_a_symlink_stays_behind_it(tmp_path: Path) -> None:
    real, link = tmp_path / "real.jsonl", tmp_path / "link.jsonl"
    real.write_text(record_line("a") + "garbage\n" + record_line("b"))
    link.symlink_to(real)
    store = JsonlResultSink(link)
    await store.open()
    await store.close()
    assert link.is_symlink()
    assert real.read_text() == record_line("a") + record_line("b")


async def test_a_drain_before_the_batch_starts_leaves_nothing_queued(
    telemetry: Telemetry, registry: CollectorRegistry, tmp_path: Path
) -> None:
    ran: list[str] = []

    async def work(task: Task) -> None:
        ran.append(task.id)

    processor = BatchProcessor(work, telemetry, sink=JsonlResultSink(tmp_path / "out.jsonl"))
    processor.drain()  # a SIGTERM while the results file is still being read
    summary = await processor.run([Task(str(i), "q") for i in range(5)])
    assert (ran, summary.counts) == ([], {"cancelled": 5})
    assert value(registry, "agentwatch_batch_queue_depth") == 0
    assert value(registry, "agentwatch_batch_tasks_total", {"status": "cancelled"}) == 5


async def test_a_result_too_large_to_record_is_failed_in_metrics_and_file(
    telemetry: Telemetry,
    registry: CollectorRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The span, the status counter and the results file tell the same story."""
    monkeypatch.setattr(jsonl_sink, "MAX_LINE_BYTES", 300)

    async def work(task: Task) -> str:
        return "z" * (1000 if task.id == "big" else 10)

    out = tmp_path / "results.jsonl"
    processor = BatchProcessor(work, telemetry, BatchOptions(workers=2), sink=JsonlResultSink(out))
    summary = await processor.run([Task("big", "q"), Task("small", "q")])
    assert summary.counts == {"completed": 1, "failed": 1}
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["big"]["status"] == "failed"
    assert records["big"]["result"] is None
    assert "too large" in records["big"]["error"]
    total = "agentwatch_batch_tasks_total"
    assert value(registry, total, {"status": "failed"}) == 1
    assert value(registry, total, {"status": "completed"}) == 1


async def test_no_more_workers_start_than_there_are_tasks_to_run(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    seen: list[int] = []

    async def work(task: Task) -> str:
        workers = [t for t in asyncio.all_tasks() if t.get_name().startswith("batch-worker-")]
        seen.append(len(workers))
        return task.id

    options = BatchOptions(workers=10_000)
    out = tmp_path / "results.jsonl"
    tasks = [Task(str(i), "q") for i in range(3)]
    summary = await BatchProcessor(work, telemetry, options, sink=JsonlResultSink(out)).run(tasks)
    assert summary.counts == {"completed": 3}
    assert seen
    assert max(seen) <= 3  # the old code started 10,000 (100,000,000: OOM)

    started: list[str] = []
    original = asyncio.create_task

    def counting(coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        started.append(str(kwargs.get("name", "")))
        return original(coro, **kwargs)

    again = BatchProcessor(work, telemetry, options, sink=JsonlResultSink(out))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(asyncio, "create_task", counting)
        summary = await again.run(tasks)
    assert summary.skipped == 3
    assert not [name for name in started if name.startswith("batch-worker-")]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": 10_001}, "workers must be at most 10000"),
        ({"workers": 0}, "workers must be at most 10000 (and at least 1), got 0"),
        ({"workers": 4, "concurrency": 5}, "concurrency must be 1 to workers (4), got 5"),
        ({"workers": 4, "concurrency": 0}, "concurrency must be 1 to workers (4), got 0"),
    ],
)
def test_options_have_bounds_named_in_the_message(options: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        BatchOptions(**options)


def test_tasks_have_only_their_fields_and_one_query(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        '{"id": "a", "input": "x", "zzz": 1}\n'
        '{"id": "b", "query": "x", "input": "y"}\n'
        '{"id": "c", "input": "x", "priority": 1}\n'
    )
    with pytest.raises(BatchInputError) as bad:
        read_tasks(path)
    text = str(bad.value)
    assert "line 1: unknown field(s) 'zzz'; a task has id, query (or input), priority" in text
    assert "line 2: give 'query' or 'input', not both" in text
    assert "line 3" not in text
    assert "2 problem(s)" in text
