"""A batch on Redis survives its workers being SIGKILLed at random moments and Redis
itself restarting empty mid-batch: every task's result exactly once in the file (0 lost,
0 duplicated), all completed, exit 0. Each killed worker is replaced by a new one (three
run at any time); Redis runs without persistence, so its restart loses the queue, and the
producer enqueues again what has no result. Sizes from env vars (`make soak`: 20 kills
of a 500-task batch); every wait bounded."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.helpers import cli_env
from tests.redis_helpers import AGENTWATCH, WORKER_ENV, RedisServer, Worker, write_tasks

pytestmark = pytest.mark.integration

KILLS = int(os.environ.get("AGENTWATCH_REDIS_CRASH_KILLS", "6"))
TASKS = int(os.environ.get("AGENTWATCH_REDIS_CRASH_TASKS", "300"))
SEED = int(os.environ.get("AGENTWATCH_REDIS_CRASH_SEED", "19"))
WORKERS = 3


def test_sigkilled_workers_and_a_redis_restart_lose_and_repeat_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    chance = random.Random(SEED)
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    write_tasks(tasks, TASKS)
    env = cli_env(**WORKER_ENV, AGENTWATCH_BUILTIN_LATENCY="0.05")
    with ExitStack() as stack:

        def spawn() -> Worker:
            output = stack.enter_context(tempfile.TemporaryFile())
            process = subprocess.Popen(
                [*AGENTWATCH, "worker", "--redis", redis_server.url, "--concurrency", "3",
                 "--metrics-port", "0"],
                env=env, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
            stack.callback(_stop, process)
            return Worker(process, output)

        pool = [spawn() for _ in range(WORKERS)]
        for worker in pool:
            worker.wait_ready()
        said = stack.enter_context(tempfile.TemporaryFile())
        producer = subprocess.Popen(
            [*AGENTWATCH, "batch", str(tasks), "--out", str(out), "--redis", redis_server.url],
            env=cli_env(OTEL_TRACES_EXPORTER="none"),
            stdout=subprocess.DEVNULL,
            stderr=said,
        )
        stack.callback(_stop, producer)
        deadline = time.monotonic() + 600
        while _written(out) < TASKS // 10:  # bounded: the batch under way before any kill
            assert producer.poll() is None, "the batch ended before the kills"
            assert time.monotonic() < deadline, "no results in 600 s"
            time.sleep(0.05)
        kills, restarted_at = 0, -1
        while kills < KILLS and producer.poll() is None:  # bounded: KILLS, the deadline
            assert time.monotonic() < deadline, f"only {kills} kills in 600 s"
            time.sleep(chance.uniform(0.3, 1.5))
            victim = chance.randrange(WORKERS)
            pool[victim].process.send_signal(signal.SIGKILL)
            pool[victim].process.wait(timeout=30)
            pool[victim] = spawn()
            kills += 1
            if kills == KILLS // 2 and restarted_at < 0:
                restarted_at = _written(out)
                redis_server.restart()  # empty: no persistence
        assert kills == KILLS, f"the batch ended after {kills} of {KILLS} kills: make it longer"
        assert 0 < restarted_at < TASKS, "Redis was not restarted mid-batch"
        code = producer.wait(timeout=max(deadline - time.monotonic(), 60))
        said.seek(0)
        stderr = said.read().decode(errors="replace")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [record["id"] for record in records]
    lost = {f"task-{i}" for i in range(TASKS)} - set(ids)
    duplicated = len(ids) - len(set(ids))
    statuses = {record["status"] for record in records}
    print(
        f"FIGURE redis crash: {kills} SIGKILLs of {WORKERS} workers and a Redis restart on a "
        f"{TASKS}-task batch (Redis restarted at {restarted_at} results): {len(lost)} lost, "
        f"{duplicated} duplicated, statuses {statuses}"
    )
    assert (len(lost), duplicated) == (0, 0)
    assert statuses == {"completed"}
    assert code == 0, stderr[-2000:]
    assert "Redis lost batch" in stderr  # noticed the empty Redis, enqueued the rest again


def _written(out: Path) -> int:
    return out.read_bytes().count(b"\n") if out.exists() else 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)
