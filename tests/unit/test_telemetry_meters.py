"""Each operation owns all of its metrics: what no one span records (queue depth, tasks
in progress, unstarted tasks, retry counts, shed runs) has an owner beside the span's."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.telemetry import Telemetry
from agentwatch.telemetry import names as n


def value(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    return registry.get_sample_value(name, labels or {}) or 0.0


def test_agent_runs_count_the_runs_shed_before_a_slot(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    telemetry.agent_runs.shed(n.SHED_TIMEOUT)
    telemetry.agent_runs.shed(n.SHED_TIMEOUT)
    telemetry.agent_runs.shed(n.SHED_CANCELLED)
    shed = f"{n.M_ADMISSION_SHED}_total"
    assert value(registry, shed, {"reason": n.SHED_TIMEOUT}) == 2
    assert value(registry, shed, {"reason": n.SHED_CANCELLED}) == 1


def test_batches_own_the_queue_depth_and_in_progress_gauges(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    batches = telemetry.batches
    batches.queued(5)
    batches.dequeued()
    batches.started()
    assert value(registry, n.M_BATCH_QUEUE_DEPTH) == 4
    assert value(registry, n.M_BATCH_IN_PROGRESS) == 1
    batches.finished()
    batches.dequeued(4)  # the rest removed unstarted
    batches.unstarted(n.STATUS_CANCELLED, 4)
    assert value(registry, n.M_BATCH_QUEUE_DEPTH) == 0
    assert value(registry, n.M_BATCH_IN_PROGRESS) == 0
    assert value(registry, f"{n.M_BATCH_TASKS}_total", {"status": n.STATUS_CANCELLED}) == 4


def test_retries_count_every_attempt_and_each_wait(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    telemetry.retries.count(n.OP_CHAT, n.RETRY_RETRY, 0.25)
    telemetry.retries.count(n.OP_CHAT, n.RETRY_SUCCESS)
    attempts = f"{n.M_RETRY_ATTEMPTS}_total"
    for outcome, expected in ((n.RETRY_RETRY, 1), (n.RETRY_SUCCESS, 1), (n.RETRY_GIVEUP, 0)):
        labels = {"operation": n.OP_CHAT, "outcome": outcome}
        assert value(registry, attempts, labels) == expected
    assert value(registry, f"{n.M_RETRY_BACKOFF}_sum", {"operation": n.OP_CHAT}) == 0.25
    assert value(registry, f"{n.M_RETRY_BACKOFF}_count", {"operation": n.OP_CHAT}) == 1


@pytest.mark.parametrize("form", ["with", "async with"])
async def test_every_operation_is_its_own_context_manager(
    telemetry: Telemetry, exporter: InMemorySpanExporter, form: str
) -> None:
    """``with`` / ``async with`` give back the operation itself, its own type."""
    invocation = telemetry.tool_call("calculator")
    if form == "with":
        with invocation as entered:
            entered.capture(arguments="{}")
    else:
        async with invocation as entered:
            entered.capture(arguments="{}")
    assert entered is invocation
    (span,) = exporter.get_finished_spans()
    assert span.name == f"{n.OP_EXECUTE_TOOL} calculator"
