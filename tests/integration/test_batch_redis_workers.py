"""A batch on Redis worked by three `agentwatch worker` processes, one SIGKILLed while it
holds tasks: the batch ends with exit 0 and every task's result exactly once in the
file, all completed; the killed worker's tasks were taken again by the others (their
own /metrics count the reclaims)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.helpers import cli_env
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
