"""The result-sink seam: the processor works with any ``ResultSink`` (open / check / add /
close), the memory sink resumes like the file does, and each sink keeps its contract; the
batch statuses come from telemetry's one vocabulary."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agentwatch.runtime import ResultStore as PublicResultStore
from agentwatch.runtime.batch import (
    BatchOptions,
    BatchProcessor,
    JsonlResultSink,
    MemoryResultSink,
    PagedResultSink,
    RecordTooLarge,
    ResultSink,
    ResultStore,
    Task,
    TaskStatus,
)
from agentwatch.runtime.batch.sink import Record
from agentwatch.telemetry import Telemetry
from agentwatch.telemetry import names as n
from tests.unit.test_vocabulary import ROOT, literals


class ListSink:
    """A sink written against the protocol alone, logging every call it gets."""

    def __init__(self, already: Mapping[str, Record] | None = None, limit: int = 10_000) -> None:
        self.already = dict(already or {})
        self.limit = limit
        self.calls: list[str] = []
        self.records: list[Record] = []
        self.fail_add: BaseException | None = None

    async def open(self) -> Mapping[str, Record]:
        self.calls.append("open")
        return self.already

    def check(self, record: Record) -> None:
        if len(str(record["result"])) > self.limit:
            raise RecordTooLarge(f"longer than {self.limit}")

    async def add(self, record: Record) -> None:
        self.calls.append(f"add {record['id']}")
        await asyncio.sleep(0)  # durable only after a suspension: reports must wait for it
        if self.fail_add is not None:
            raise self.fail_add
        self.records.append(record)

    async def close(self) -> None:
        self.calls.append("close")


def by_id(records: list[Record] | Any) -> dict[str, str]:
    return {str(r["id"]): str(r["status"]) for r in records}


async def test_the_processor_works_with_any_sink(telemetry: Telemetry) -> None:
    async def work(task: Task) -> str:
        if task.id == "bad":
            raise ValueError("broken")
        return "x" * 50 if task.id == "huge" else task.id

    sink = ListSink(limit=20)
    typed: ResultSink = sink  # mypy: ListSink satisfies the protocol
    reported: list[str] = []

    def on_progress(task: Task) -> None:
        assert f"add {task.id}" in sink.calls, "reported before its record was added"
        assert task.id in {str(r["id"]) for r in sink.records}, "reported before durable"
        reported.append(task.id)

    tasks = [Task(x, "q") for x in ("a", "b", "bad", "huge")]
    processor = BatchProcessor(
        work, telemetry, BatchOptions(workers=2), sink=typed, on_progress=on_progress
    )
    summary = await processor.run(tasks)
    assert summary.counts == {"completed": 2, "failed": 2}
    assert sink.calls[0] == "open"
    assert sink.calls[-1] == "close"
    assert sorted(sink.calls[1:-1]) == ["add a", "add b", "add bad", "add huge"]
    assert by_id(sink.records) == {
        "a": "completed",
        "b": "completed",
        "bad": "failed",
        "huge": "failed",  # check() refused it: failed, not reported done and lost
    }
    huge = next(r for r in sink.records if r["id"] == "huge")
    assert huge["result"] is None
    assert "RecordTooLarge" in huge["error"]
    assert sorted(reported) == ["a", "b", "bad", "huge"]


async def test_what_a_sink_already_holds_is_skipped_and_cancelled_runs_again(
    telemetry: Telemetry,
) -> None:
    ran: list[str] = []

    async def work(task: Task) -> str:
        ran.append(task.id)
        return task.id

    already = {
        "a": {"id": "a", "status": "completed", "result": "A", "error": None},
        "b": {"id": "b", "status": "failed", "result": None, "error": "E"},
        "c": {"id": "c", "status": "cancelled", "result": None, "error": None},
    }
    sink = ListSink(already)
    tasks = [Task(x, "q") for x in "abcd"]
    summary = await BatchProcessor(work, telemetry, sink=sink).run(tasks)
    assert sorted(ran) == ["c", "d"]  # a final record is a result; a cancelled one is not
    assert (summary.skipped, summary.retried) == (2, 0)
    assert by_id(sink.records) == {"c": "completed", "d": "completed"}


@pytest.mark.parametrize("kind", ["jsonl", "memory"])
async def test_resume_and_retry_failed_are_the_same_with_every_sink(
    telemetry: Telemetry, tmp_path: Path, kind: str
) -> None:
    out = tmp_path / "results.jsonl"
    memory = MemoryResultSink()

    def new_sink() -> ResultSink:  # a file is opened again by each run; memory is kept
        return JsonlResultSink(out) if kind == "jsonl" else memory

    broken = {"b", "d"}
    ran: list[str] = []

    async def work(task: Task) -> str:
        ran.append(task.id)
        if task.id in broken:
            raise RuntimeError("model down")
        return task.id.upper()

    tasks = [Task(x, "q") for x in "abcde"]
    first = await BatchProcessor(work, telemetry, sink=new_sink()).run(tasks)
    assert first.counts == {"completed": 3, "failed": 2}
    again = await BatchProcessor(work, telemetry, sink=new_sink()).run(tasks)
    assert again.skipped == 5  # without the option, a failure is a final result
    broken.clear()  # the model is fixed
    ran.clear()
    options = BatchOptions(retry_failed=True)
    fixed = await BatchProcessor(work, telemetry, options, sink=new_sink()).run(tasks)
    assert sorted(ran) == ["b", "d"]
    assert (fixed.skipped, fixed.retried, fixed.counts) == (3, 2, {"completed": 5})
    sink = new_sink()
    done = await sink.open()
    await sink.close()
    assert by_id(done.values()) == dict.fromkeys("abcde", "completed")
    if kind == "jsonl":  # each id once in the file
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert sorted(r["id"] for r in records) == list("abcde")
    else:  # every record, appended: an offset into them stays valid
        assert [r["status"] for r in memory.records].count("failed") == 2
        assert len(memory.records) == 7


async def test_every_task_of_a_batch_cancelled_from_outside_reaches_the_sink(
    telemetry: Telemetry,
) -> None:
    started = asyncio.Event()

    async def work(task: Task) -> str:
        started.set()
        await asyncio.Event().wait()  # never finishes by itself
        return "never"

    sink = ListSink()
    processor = BatchProcessor(work, telemetry, BatchOptions(workers=2, concurrency=1), sink=sink)
    run = asyncio.create_task(processor.run([Task(str(i), "q") for i in range(5)]))
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert by_id(sink.records) == {str(i): "cancelled" for i in range(5)}
    assert sink.calls[-1] == "close"


async def test_tasks_cancelled_in_the_queue_reach_the_memory_sink(telemetry: Telemetry) -> None:
    started = asyncio.Event()

    async def work(task: Task) -> str:
        started.set()
        await asyncio.Event().wait()  # only cancel() ends it
        return "never"

    sink = MemoryResultSink()
    processor = BatchProcessor(work, telemetry, BatchOptions(workers=1), sink=sink)
    run = asyncio.create_task(processor.run([Task(str(i), "q", i) for i in range(4)]))
    await started.wait()
    processor.cancel()
    assert (await run).counts == {"cancelled": 4}
    assert [r["id"] for r in sink.records] == ["0", "1", "2", "3"]  # each once
    assert {r["status"] for r in sink.records} == {"cancelled"}


async def test_a_sink_whose_add_fails_stops_the_batch(telemetry: Telemetry) -> None:
    async def work(task: Task) -> str:
        return task.id

    sink = ListSink()
    sink.fail_add = OSError("the store went away")
    processor = BatchProcessor(work, telemetry, BatchOptions(workers=1), sink=sink)
    with pytest.raises(OSError, match="went away"):
        await processor.run([Task(str(i), "q") for i in range(10)])
    assert sink.records == []
    assert sink.calls[-1] == "close"
    assert len([c for c in sink.calls if c.startswith("add")]) <= 10


async def test_the_memory_sink_reads_back_in_pages() -> None:
    sink: PagedResultSink = MemoryResultSink()
    assert await sink.open() == {}
    for i in range(5):
        await sink.add({"id": i, "status": "cancelled" if i == 2 else "completed"})
    assert sink.count() == 5
    assert [r["id"] for r in await sink.page(0, 2)] == [0, 1]
    assert [r["id"] for r in await sink.page(2, 10)] == [2, 3, 4]  # cancelled ones too
    assert await sink.page(5, 10) == []
    assert sorted(await sink.open()) == ["0", "1", "2", "3", "4"]


async def test_the_jsonl_sink_writes_no_cancelled_record(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    sink = JsonlResultSink(out)
    assert await sink.open() == {}
    await sink.add({"id": "a", "status": "cancelled", "result": None, "error": None})
    await sink.add({"id": "b", "status": "completed", "result": 1, "error": None})
    await sink.close()
    assert out.read_text().splitlines() == [
        '{"id": "b", "status": "completed", "result": 1, "error": null}'
    ]
    sink.check({"id": "c", "status": "completed", "result": "fits"})


def test_the_first_names_stay() -> None:
    assert ResultStore is JsonlResultSink
    assert PublicResultStore is JsonlResultSink


async def test_store_is_the_first_name_of_sink(telemetry: Telemetry, tmp_path: Path) -> None:
    async def work(task: Task) -> str:
        return task.id

    sink = JsonlResultSink(tmp_path / "results.jsonl")
    processor = BatchProcessor(work, telemetry, store=sink)
    assert processor.sink is sink
    assert (await processor.run([Task("a", "q")])).counts == {"completed": 1}
    with pytest.raises(TypeError, match="not both"):
        BatchProcessor(work, telemetry, sink=sink, store=MemoryResultSink())
    assert isinstance(BatchProcessor(work, telemetry).sink, MemoryResultSink)


def test_the_batch_statuses_are_spelled_once_in_telemetry_names() -> None:
    batch = [*sorted((ROOT / "runtime" / "batch").glob("*.py")), ROOT / "runtime/cli/batch.py"]
    spelled = [
        f"{path.name}:{line}: {text!r}"
        for path in batch
        for line, text in literals(path)
        if text in n.BATCH_STATUSES
    ]
    assert spelled == []
    ended = {str(status) for status in TaskStatus} - {"pending", "processing"}
    assert ended == set(n.BATCH_STATUSES)
