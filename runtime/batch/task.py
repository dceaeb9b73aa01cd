"""A batch task: the seed's fields, with statuses that say how it ended."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from agentwatch.telemetry import AgentwatchError
from agentwatch.telemetry import names as n

MAX_QUERY_CHARS = 32_000
TASK_FIELDS = frozenset({"id", "query", "input", "priority"})  # "input": query's other name


class TaskStatus(StrEnum):
    """Where a task is; how it ended is one of telemetry's ``BATCH_STATUSES`` (the
    ``status`` label of the batch metrics), spelled there once."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = n.STATUS_COMPLETED
    FAILED = n.STATUS_FAILED
    TIMED_OUT = n.STATUS_TIMED_OUT
    CANCELLED = n.STATUS_CANCELLED


ENDED = frozenset(TaskStatus(status) for status in n.BATCH_STATUSES)
# What a result sink keeps: a task with one of these statuses is done (skipped on
# resume); the RETRYABLE ones run again when asked (``--retry-failed``).
FINAL = ENDED - {TaskStatus.CANCELLED}
RETRYABLE = frozenset(TaskStatus(status) for status in n.BATCH_FAILED_STATUSES)


class BatchInputError(AgentwatchError, ValueError):
    """The tasks cannot be run: bad lines, duplicate ids. Nothing was started."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} problem(s) in the tasks:\n{shown}{more}")


@dataclass(slots=True)
class Task:
    id: str
    query: str
    priority: int = 5  # lower runs first
    created_at: float = field(default_factory=time.time)
    result: Any = None
    status: TaskStatus = TaskStatus.PENDING
    error: str | None = None
    cost_usd: float | None = None  # what its model calls cost (None: none could be priced)

    def record(self, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": str(self.status),
            "priority": self.priority,
            "result": self.result,
            "error": self.error,
            "cost_usd": self.cost_usd,
            **extra,
        }


def task_from(value: Any) -> Task:
    """A task from a JSON object ``{"id", "query" (or "input"), "priority"?}``; any other
    field, or both "query" and "input", is refused (a typo must not pass silently)."""
    if not isinstance(value, dict):
        raise ValueError("a task must be a JSON object")
    unknown = sorted(str(key) for key in value if key not in TASK_FIELDS)
    if unknown:
        names = ", ".join(repr(name[:64]) for name in unknown[:5])
        raise ValueError(f"unknown field(s) {names}; a task has id, query (or input), priority")
    if "query" in value and "input" in value:
        raise ValueError("give 'query' or 'input', not both")
    task_id = value.get("id")
    if not isinstance(task_id, str | int) or isinstance(task_id, bool) or str(task_id) == "":
        raise ValueError("'id' must be a non-empty string or integer")
    query = value.get("query", value.get("input"))
    if not isinstance(query, str) or not query.strip():
        raise ValueError("'query' must be a non-empty string")
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"'query' is longer than {MAX_QUERY_CHARS} characters")
    priority = value.get("priority", 5)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ValueError("'priority' must be an integer")
    return Task(str(task_id), query, priority)


def check_unique(tasks: Iterable[Task]) -> list[Task]:
    seen: dict[str, int] = {}
    problems = []
    out = []
    for index, task in enumerate(tasks):
        if task.id in seen:
            problems.append(
                f"task {index + 1}: duplicate id {task.id!r} (first at {seen[task.id]})"
            )
        else:
            seen[task.id] = index + 1
        out.append(task)
    if problems:
        raise BatchInputError(problems)
    return out


def read_tasks(path: Path, max_line_bytes: int = 1024 * 1024) -> list[Task]:
    """Tasks from a JSONL file; every bad line is reported with its number. A line is
    never held in memory beyond ``max_line_bytes``."""
    tasks, problems = [], []
    with path.open("rb") as handle:
        number = 0
        while raw := handle.readline(max_line_bytes + 1):  # bounded by the file's size
            number += 1
            if len(raw) > max_line_bytes:
                problems.append(f"line {number}: longer than {max_line_bytes} bytes")
                while raw and not raw.endswith(b"\n"):  # skip the rest of it in chunks
                    raw = handle.readline(65536)
                continue
            if not raw.strip():
                continue
            try:
                tasks.append(task_from(json.loads(raw)))
            except (ValueError, RecursionError) as exc:
                problems.append(f"line {number}: {exc}"[:300])
    if problems:
        raise BatchInputError(problems)
    return check_unique(tasks)
