"""``agentwatch batch`` as a user runs it: where results may go, what its exit code says,
what happens when the disk fills up, a second batch on the same file, a damaged file."""

from __future__ import annotations

import fcntl
import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import cli_env, run_cli

pytestmark = pytest.mark.integration

EXIT_USAGE = 2
EXIT_TASKS_FAILED = 4
EXIT_RESULTS_FILE = 7


def write_tasks(path: Path, count: int) -> list[str]:
    ids = [f"task-{i}" for i in range(count)]
    path.write_text(
        "".join(
            json.dumps({"id": i, "query": f"what is {n} + 1"}) + "\n" for n, i in enumerate(ids)
        )
    )
    return ids


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("agentwatch batch:")]


@pytest.mark.parametrize("out", ["/dev/full", "/dev/stdout", "a directory"])
def test_out_must_be_a_regular_file(tmp_path: Path, out: str) -> None:
    tasks = tmp_path / "tasks.jsonl"
    write_tasks(tasks, 3)
    target = str(tmp_path) if out == "a directory" else out
    # stdout is a pipe here, as in `agentwatch batch ... --out /dev/stdout | head`
    done = run_cli("batch", str(tasks), "--out", target, timeout=60)
    assert done.returncode == EXIT_RESULTS_FILE, done.stderr
    [line] = errors(done.stderr)
    assert target in line
    assert "directory" in line or "not a regular file" in line
    assert "Traceback" not in done.stderr


def _small_file_limit() -> None:  # in the child: files may not grow past 4 KiB
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_a_full_disk_stops_the_batch_with_one_line_and_keeps_what_was_written(
    tmp_path: Path,
) -> None:
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    ids = write_tasks(tasks, 40)  # ~40 records of ~500 bytes: far more than 4 KiB
    command = [sys.executable, "-m", "agentwatch.runtime.cli", "batch", str(tasks)]
    command += ["--out", str(out), "--workers", "4"]
    full = subprocess.run(
        command,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,  # on the old code it never finished
        preexec_fn=_small_file_limit,
        check=False,
    )
    assert full.returncode == EXIT_RESULTS_FILE, full.stderr
    [line] = errors(full.stderr)
    assert str(out) in line
    assert "File too large" in line  # the OS error, as the OS says it
    kept = out.read_bytes()
    assert kept.endswith(b"\n")  # whole lines only
    written = [json.loads(raw)["id"] for raw in kept.splitlines()]
    assert 0 < len(written) < len(ids)

    again = run_cli("batch", str(tasks), "--out", str(out))  # room again: it resumes
    assert again.returncode == 0, again.stderr
    assert f"skipped, already done: {len(written)}" in again.stderr
    final = [json.loads(raw)["id"] for raw in out.read_text().splitlines()]
    assert sorted(final) == sorted(ids)


def test_a_second_batch_on_the_same_file_is_refused(tmp_path: Path) -> None:
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    write_tasks(tasks, 3)
    with out.open("ab") as held:  # another batch holds the file
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        second = run_cli("batch", str(tasks), "--out", str(out))
    assert second.returncode == EXIT_RESULTS_FILE, second.stderr
    [line] = errors(second.stderr)
    assert "in use by another batch" in line
    assert out.read_bytes() == b""  # it wrote nothing


def test_failed_tasks_exit_non_zero_and_retry_failed_runs_them_again(tmp_path: Path) -> None:
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    ids = write_tasks(tasks, 4)
    slow = run_cli(
        "batch", str(tasks), "--out", str(out), "--timeout", "0.05",
        AGENTWATCH_BUILTIN_LATENCY="0.5",
    )  # fmt: skip
    assert slow.returncode == EXIT_TASKS_FAILED, slow.stderr
    assert "--retry-failed" in slow.stderr
    assert {json.loads(x)["status"] for x in out.read_text().splitlines()} == {"timed_out"}

    resumed = run_cli("batch", str(tasks), "--out", str(out))  # final unless asked
    assert resumed.returncode == EXIT_TASKS_FAILED, resumed.stderr
    assert "skipped, already done: 4" in resumed.stderr

    retried = run_cli("batch", str(tasks), "--out", str(out), "--retry-failed")
    assert retried.returncode == 0, retried.stderr
    assert "run again: 4" in retried.stderr
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(ids)  # each id's final result once
    assert {r["status"] for r in records} == {"completed"}


def test_an_empty_tasks_file_warns(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n")
    done = run_cli("batch", str(tasks), "--out", str(tmp_path / "out.jsonl"), timeout=60)
    assert done.returncode == 0
    assert "warning" in done.stderr
    assert "no tasks" in done.stderr


def test_a_corrupt_middle_line_resumes_without_rerunning_finished_tasks(tmp_path: Path) -> None:
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    ids = write_tasks(tasks, 12)
    first = run_cli("batch", str(tasks), "--out", str(out))
    assert first.returncode == 0, first.stderr
    lines = out.read_bytes().splitlines(keepends=True)
    damaged = lines[5]
    lines[5] = damaged[: len(damaged) // 2] + b"\n"  # half a line, mid-file
    out.write_bytes(b"".join(lines))

    again = run_cli("batch", str(tasks), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "line 6" in again.stderr  # the warning names the line
    assert "skipped, already done: 11" in again.stderr  # only the damaged one ran again
    after = out.read_bytes().splitlines(keepends=True)
    for line in lines[:5] + lines[6:]:  # every valid record kept as it was (same trace ids)
        assert line in after
    assert sorted(json.loads(x)["id"] for x in after) == sorted(ids)
    assert (tmp_path / "results.jsonl.corrupt").read_bytes() == lines[5]


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
def test_out_that_is_the_tasks_file_is_refused_and_nothing_is_touched(
    tmp_path: Path, how: str
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    write_tasks(tasks, 3)
    content = tasks.read_bytes()
    out = tasks
    if how == "symlink":
        out = tmp_path / "link.jsonl"
        out.symlink_to(tasks)
    elif how == "hard link":
        out = tmp_path / "hard.jsonl"
        out.hardlink_to(tasks)
    done = run_cli("batch", str(tasks), "--out", str(out), timeout=60)
    assert done.returncode == EXIT_RESULTS_FILE, done.stderr
    [line] = errors(done.stderr)
    assert "is the tasks file" in line
    assert "Traceback" not in done.stderr
    assert tasks.read_bytes() == content  # the old code rewrote it with results
    assert not (tmp_path / "tasks.jsonl.corrupt").exists()
    assert not (tmp_path / f"{out.name}.corrupt").exists()


def test_out_in_a_directory_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    write_tasks(tasks, 3)
    out = tmp_path / "no" / "such" / "results.jsonl"
    done = run_cli("batch", str(tasks), "--out", str(out), timeout=60)
    assert done.returncode == EXIT_RESULTS_FILE, done.stderr
    [line] = errors(done.stderr)
    assert f"{tmp_path / 'no' / 'such'} does not exist" in line
    assert not (tmp_path / "no").exists()  # the old code created the whole tree


def test_too_many_workers_is_one_line(tmp_path: Path) -> None:
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    write_tasks(tasks, 3)
    done = run_cli("batch", str(tasks), "--out", str(out), "--workers", "100000000", timeout=60)
    assert done.returncode == EXIT_USAGE, done.stderr
    [line] = errors(done.stderr)
    assert "workers must be at most 10000" in line
    assert not out.exists()


def test_help_says_where_out_may_be_and_what_a_task_has() -> None:
    done = run_cli("batch", "--help", timeout=60)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "must exist" in text
    assert "never the tasks file" in text
    assert "other fields are refused" in text
