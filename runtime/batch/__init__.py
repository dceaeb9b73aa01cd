"""Batches of tasks: priority queue, workers, timeouts, resumable JSONL results."""

from .processor import BatchOptions, BatchProcessor, BatchSummary
from .store import ResultStore, load_results
from .task import BatchInputError, Task, TaskStatus, read_tasks, task_from

__all__ = [
    "BatchInputError",
    "BatchOptions",
    "BatchProcessor",
    "BatchSummary",
    "ResultStore",
    "Task",
    "TaskStatus",
    "load_results",
    "read_tasks",
    "task_from",
]
