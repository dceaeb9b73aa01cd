"""A batch on Redis worked by three `agentwatch worker` processes, one SIGKILLed while it
holds tasks: the batch ends with exit 0 and every task's result exactly once in the
file, all completed; the killed worker's tasks were taken again by the others (their
own /metrics count the reclaims)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
import redis

from tests.helpers import cli_env
from tests.redisserver import RedisServer

pytestmark = pytest.mark.integration

TASKS = 150
AGENTWATCH = [sys.executable, "-m", "agentwatch.runtime.cli"]
# a quiet worker's tasks are taken again after 2 s (30 s by default)
WORKER_ENV = {"AGENTWATCH_REDIS_VISIBILITY_TIMEOUT": "2", "OTEL_TRACES_EXPORTER": "none"}


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    output: IO[bytes]
    metrics_url: str = ""

    def wait_ready(self, seconds: float = 120) -> None:
        """Until it prints its ready line (the agent started), which names its /metrics."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # bounded
            self.output.seek(0)
            found = re.search(rb"metrics on (http://\S+/metrics)", self.output.read())
            if found:
                self.metrics_url = found.group(1).decode()
                return
            assert self.process.poll() is None, "the worker exited at start"
            time.sleep(0.1)
        raise AssertionError(f"worker not ready within {seconds} s")


@contextmanager
def workers(url: str, count: int, concurrency: int = 4) -> Iterator[list[Worker]]:
    """``count`` worker processes, each with a free /metrics port; stopped on exit."""
    with ExitStack() as stack:
        started = []
        for _ in range(count):
            output = stack.enter_context(tempfile.TemporaryFile())
            process = subprocess.Popen(
                [*AGENTWATCH, "worker", "--redis", url, "--concurrency", str(concurrency),
                 "--metrics-port", "0"],
                env=cli_env(**WORKER_ENV),
                stdout=output,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            started.append(Worker(process, output))
        try:
            yield started
        finally:
            for worker in started:
                if worker.process.poll() is None:
                    worker.process.terminate()
            for worker in started:
                worker.process.wait(timeout=60)


def write_tasks(path: Path, count: int) -> None:
    path.write_text(
        "".join(
            json.dumps({"id": f"task-{i}", "query": f"what is {i} + 1", "priority": i % 3}) + "\n"
            for i in range(count)
        )
    )


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
