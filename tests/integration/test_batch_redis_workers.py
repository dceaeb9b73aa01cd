"""A batch on Redis worked by three `agentwatch worker` processes, one SIGKILLed while it
holds tasks: the batch ends with exit 0 and every task's result exactly once in the
file, all completed; the killed worker's tasks were taken again by the others (their
own /metrics count the reclaims)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from tests.helpers import cli_env
from tests.integration.conftest import OtlpReceiver
from tests.redis_helpers import AGENTWATCH, RedisServer, workers, write_tasks

pytestmark = pytest.mark.integration

TASKS = 150


def holds_tasks(url: str, pid: int) -> bool:
    """Whether the worker with this pid holds (has taken, not acknowledged) a task."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        for band in range(10):
            try:
                consumers = client.xinfo_consumers(f"agentwatch:q:{band}", "workers")
            except redis.ResponseError:
                continue
            for consumer in consumers:
                if f"-{pid}-" in consumer["name"] and consumer["pending"] > 0:
                    return True
        return False
    finally:
        client.close()


def metric(url: str, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_three_workers_one_killed_every_task_once_all_completed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    write_tasks(tasks, TASKS)
    with workers(redis_server.url, 3) as pool:
        for worker in pool:
            worker.wait_ready()
        producer = subprocess.Popen(
            [*AGENTWATCH, "batch", str(tasks), "--out", str(out), "--redis", redis_server.url],
            env=cli_env(OTEL_TRACES_EXPORTER="none"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        victim = pool[0]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # bounded: until the victim holds tasks mid-way
            written = out.read_bytes().count(b"\n") if out.exists() else 0
            if written >= 20 and holds_tasks(redis_server.url, victim.process.pid):
                break
            assert producer.poll() is None, "the batch ended before a worker could be killed"
            time.sleep(0.02)
        else:
            raise AssertionError("the victim never held a task mid-way")
        victim.process.send_signal(signal.SIGKILL)
        _, stderr = producer.communicate(timeout=240)
        assert producer.returncode == 0, stderr.decode()[-2000:]
        reclaims = sum(
            metric(w.metrics_url, "agentwatch_redis_queue_reclaims_total") for w in pool[1:]
        )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [record["id"] for record in records]
    assert len(ids) == TASKS, f"{len(ids)} records for {TASKS} tasks"
    assert sorted(ids) == sorted(f"task-{i}" for i in range(TASKS))
    assert {record["status"] for record in records} == {"completed"}
    assert reclaims >= 1, "the killed worker's tasks were not taken again"
    assert f"completed {TASKS}" in stderr.decode()


def test_worker_needs_a_redis_url() -> None:
    answer = subprocess.run(
        [*AGENTWATCH, "worker"], capture_output=True, text=True, timeout=60, check=False,
        env=cli_env(),
    )  # fmt: skip
    assert answer.returncode == 2
    assert "--redis" in answer.stderr


def test_a_killed_producer_resumes_with_what_arrived_meanwhile(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The producer SIGKILLed mid-way: the worker goes on; the same command again
    writes the results that arrived meanwhile, enqueues nothing twice, and ends with
    each task once in the file."""
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    count = 60
    write_tasks(tasks, count)
    command = [*AGENTWATCH, "batch", str(tasks), "--out", str(out), "--redis", redis_server.url]
    env = cli_env(OTEL_TRACES_EXPORTER="none")
    with workers(redis_server.url, 1, AGENTWATCH_BUILTIN_LATENCY="0.02") as pool:
        pool[0].wait_ready()
        producer = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # bounded: until some results are in the file
            if out.exists() and out.read_bytes().count(b"\n") >= 5:
                break
            assert producer.poll() is None, "the batch ended before its producer was killed"
            time.sleep(0.02)
        producer.send_signal(signal.SIGKILL)
        producer.wait(timeout=30)
        written = out.read_bytes().count(b"\n")
        assert written < count
        again = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=240, check=False
        )
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"skipped, already done: {written}" in again.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(f"task-{i}" for i in range(count))


async def test_each_task_span_continues_the_batch_trace_across_processes(
    tmp_path: Path, redis_server: RedisServer, otlp_receiver: OtlpReceiver
) -> None:
    """The producer's `batch` span and each worker's `batch_task` spans, exported by two
    processes, are one trace: every task span's parent is the batch span (the
    traceparent carried in the task's message)."""
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    write_tasks(tasks, 4)
    env = cli_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.url, OTEL_TRACES_EXPORTER="otlp")
    worker = await asyncio.create_subprocess_exec(
        *AGENTWATCH, "worker", "--redis", redis_server.url, "--metrics-port", "0",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        async with asyncio.timeout(120):
            for _ in range(100):  # bounded: its first lines, until the ready one
                line = await worker.stdout.readline()
                assert line, "the worker exited at start"
                if b"metrics on" in line:
                    break
        producer = await asyncio.create_subprocess_exec(
            *AGENTWATCH, "batch", str(tasks), "--out", str(out), "--redis", redis_server.url,
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await asyncio.wait_for(producer.wait(), 120) == 0
    finally:
        worker.terminate()  # drains, then flushes its spans
        await asyncio.wait_for(worker.wait(), 60)
    batch = otlp_receiver.span_named("batch")
    task_spans = [span for span in otlp_receiver.spans if span.name == "batch_task"]
    assert len(task_spans) == 4
    assert {span.trace_id for span in task_spans} == {batch.trace_id}
    assert {span.parent_span_id for span in task_spans} == {batch.span_id}
    agent_runs = [s for s in otlp_receiver.spans if s.name.startswith("invoke_agent")]
    assert {span.trace_id for span in agent_runs} == {batch.trace_id}


def test_no_worker_is_told_a_drained_batch_resumes_with_workers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """With no worker, the producer says how to start one; SIGTERM drains it (exit 3,
    nothing written); the same command with a worker running finishes every task."""
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    write_tasks(tasks, 20)
    command = [*AGENTWATCH, "batch", str(tasks), "--out", str(out), "--redis", redis_server.url]
    env = cli_env(OTEL_TRACES_EXPORTER="none")
    with tempfile.TemporaryFile() as said:
        producer = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=said)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # bounded: until the hint is printed
            said.seek(0)
            if b"is an `agentwatch worker --redis URL` running" in said.read():
                break
            assert producer.poll() is None, "the producer ended with no worker"
            time.sleep(0.1)
        else:
            raise AssertionError("no hint that no worker runs")
        producer.send_signal(signal.SIGTERM)
        assert producer.wait(timeout=60) == 3
    assert not out.exists() or out.read_text() == ""
    with workers(redis_server.url, 1) as pool:
        pool[0].wait_ready()
        again = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=240, check=False
        )
    assert again.returncode == 0, again.stderr[-2000:]
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(f"task-{i}" for i in range(20))


def test_a_batch_over_its_budget_stops_on_every_worker_and_resumes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two workers answering as gpt-4o-mini (priced) on 40 tasks with a budget of about
    four tasks: the batch is drained once its results have spent it (exit 3, the rest
    unrun), and the same command with a larger budget runs the rest: every task once."""
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    write_tasks(tasks, 40)
    command = [*AGENTWATCH, "batch", str(tasks), "--out", str(out), "--redis", redis_server.url]
    env = cli_env(OTEL_TRACES_EXPORTER="none")
    with workers(redis_server.url, 2, concurrency=1, AGENTWATCH_MODEL="gpt-4o-mini") as pool:
        for worker in pool:
            worker.wait_ready()
        first = subprocess.run(
            [*command, "--budget-usd", "0.00008"],
            env=env, capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
        records = [json.loads(line) for line in out.read_text().splitlines()]
        spent = sum(r["cost_usd"] for r in records)
        assert first.returncode == 3, first.stderr
        assert "budget spent" in first.stderr
        assert spent >= 0.00008
        assert len(records) < 40  # stopped: the rest unrun
        assert all(r["status"] == "completed" for r in records)

        second = subprocess.run(
            [*command, "--budget-usd", "1"],
            env=env, capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
    assert second.returncode == 0, second.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(f"task-{i}" for i in range(40))
