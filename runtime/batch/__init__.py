"""Batches of tasks: priority queue, workers, timeouts, resumable JSONL results."""

from .processor import BatchOptions, BatchProcessor, BatchSummary
from .store import (
    MAX_LINE_BYTES,
    RecordTooLarge,
    ResultFileError,
    ResultFileLocked,
    ResultStore,
    ResultWriteError,
    check_results_path,
    load_results,
)
from .task import BatchInputError, Task, TaskStatus, read_tasks, task_from

__all__ = [
    "MAX_LINE_BYTES",
    "BatchInputError",
    "BatchOptions",
    "BatchProcessor",
    "BatchSummary",
    "RecordTooLarge",
    "ResultFileError",
    "ResultFileLocked",
    "ResultStore",
    "ResultWriteError",
    "Task",
    "TaskStatus",
    "check_results_path",
    "load_results",
    "read_tasks",
    "task_from",
]
