"""A batch killed with SIGKILL part-way and started again ends with each task's result
exactly once in the file. Execution is at-least-once: a task running at the kill (its
record not yet on disk) runs again on resume; one whose record is on disk never does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TASKS = 200


def batch_command(tasks: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "agentwatch.runtime.cli", "batch", str(tasks),
        "--out", str(out), "--workers", "4",
    ]  # fmt: skip


def test_sigkill_then_restart_ends_with_each_result_once_in_the_file(tmp_path: Path) -> None:
    """Each result exactly once in the file; a task may run again after a crash."""
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"id": f"task-{i}", "query": f"what is {i} + 1", "priority": i % 3}) + "\n"
            for i in range(TASKS)
        )
    )
    out = tmp_path / "results.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_"))}
    env["AGENTWATCH_BUILTIN_LATENCY"] = "0.01"  # ~2 s of work: time to kill it mid-way

    victim = subprocess.Popen(
        batch_command(tasks, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:  # bounded: until some results are on disk
            if out.exists() and out.read_bytes().count(b"\n") >= 40:
                break
            time.sleep(0.02)
        assert victim.poll() is None, "the batch finished before it could be killed"
        victim.send_signal(signal.SIGKILL)
    finally:
        victim.wait(timeout=30)
    written = out.read_bytes().count(b"\n")
    assert 40 <= written < TASKS

    again = subprocess.run(
        batch_command(tasks, out), env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert again.returncode == 0, again.stderr
    assert f"skipped, already done: {written}" in again.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(ids) == TASKS
    assert sorted(ids) == sorted(f"task-{i}" for i in range(TASKS))
