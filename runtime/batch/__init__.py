"""Batches of tasks: priority queue, workers, timeouts; results to a ``ResultSink``
(a resumable JSONL file, or memory)."""

from .jsonl_sink import (
    MAX_LINE_BYTES,
    JsonlResultSink,
    ResultFileError,
    ResultFileLocked,
    ResultStore,
    ResultWriteError,
    check_results_path,
    load_results,
)
from .memory_sink import MemoryResultSink
from .processor import BatchOptions, BatchProcessor, BatchSummary
from .sink import PagedResultSink, RecordTooLarge, ResultSink
from .task import BatchInputError, Task, TaskStatus, read_tasks, task_from

__all__ = [
    "MAX_LINE_BYTES",
    "BatchInputError",
    "BatchOptions",
    "BatchProcessor",
    "BatchSummary",
    "JsonlResultSink",
    "MemoryResultSink",
    "PagedResultSink",
    "RecordTooLarge",
    "ResultFileError",
    "ResultFileLocked",
    "ResultSink",
    "ResultStore",
    "ResultWriteError",
    "Task",
    "TaskStatus",
    "check_results_path",
    "load_results",
    "read_tasks",
    "task_from",
]
