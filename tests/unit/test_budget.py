"""Budgets: a run stops once it has spent its budget; a batch stops taking tasks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

from agentwatch.runtime.agents.agent import Agent
from agentwatch.runtime.batch import (
    BatchOptions,
    BatchProcessor,
    JsonlResultSink,
    Task,
    TaskStatus,
    load_results,
)
from agentwatch.runtime.budget import BudgetExceededError, budget_from, run_budget
from agentwatch.runtime.builtin_model import Reply, ToolCall
from agentwatch.runtime.builtin_model.in_process import BuiltinChatModel
from agentwatch.runtime.tools import ToolSpec
from agentwatch.telemetry import Telemetry
from agentwatch.telemetry import names as n

M = 1_000_000


def priced_call(telemetry: Telemetry, input_tokens: int = M) -> None:
    """One gpt-4o-mini call of ``input_tokens`` (a million: $0.15)."""
    with telemetry.llm_call("gpt-4o-mini", "openai") as call:
        call.set_response(input_tokens=input_tokens, output_tokens=0)


def test_a_runs_budget_is_what_it_asks_never_more_than_the_limit() -> None:
    assert run_budget(None, None) is None
    assert run_budget(1.0, None) == 1.0
    assert run_budget(None, 0.5) == 0.5
    assert run_budget(1.0, 0.5) == 0.5
    assert run_budget(1.0, 5.0) == 1.0  # capped by AGENTWATCH_RUN_BUDGET_USD
    assert budget_from(2) == 2.0
    for bad in (0, -1, True, "1", float("nan"), float("inf")):
        with pytest.raises(ValueError, match="'budget_usd' must be a positive amount"):
            budget_from(bad)


async def lookup(topic: str) -> str:
    return f"notes on {topic}"


TOPIC = {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]}


def scripted_agent(telemetry: Telemetry, budget_usd: float | None) -> Agent:
    """An agent whose model looks something up three times, then answers; each of its
    calls reports usage as gpt-4o-mini."""
    steps = [Reply("", (ToolCall("", "lookup", f'{{"topic": "t{i}"}}'),)) for i in range(3)]
    model = BuiltinChatModel(model_name="gpt-4o-mini", script=[*steps, "done"])
    return Agent(
        model,
        [ToolSpec("lookup", "Look a topic up.", lookup, TOPIC)],
        telemetry=telemetry,
        budget_usd=budget_usd,
    )


async def test_a_run_over_its_budget_stops_with_budget_exceeded(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    agent = scripted_agent(telemetry, budget_usd=1e-9)  # the first call spends it
    with pytest.raises(BudgetExceededError) as raised:
        await agent.arun("look up three things")
    assert raised.value.budget_usd == 1e-9
    spans = exporter.get_finished_spans()
    # one model call (it crossed the budget), its tool call, then no more model calls
    assert [s.name for s in spans] == [
        "chat gpt-4o-mini",
        "execute_tool lookup",
        "invoke_agent research_agent",
    ]
    chat, tool, run = spans
    assert chat.status.status_code is StatusCode.UNSET  # nothing else failed
    assert tool.status.status_code is StatusCode.UNSET
    assert run.status.status_code is StatusCode.ERROR
    attrs = run.attributes or {}
    assert attrs[n.ERROR_TYPE] == "BudgetExceededError"
    assert attrs[n.AGENTWATCH_RUN_BUDGET] == 1e-9
    assert attrs[n.AGENTWATCH_RUN_COST_AMOUNT] > 1e-9
    labels = {
        n.L_GEN_AI_AGENT_NAME: "research_agent",
        n.L_GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        n.L_ERROR_TYPE: "BudgetExceededError",
    }
    assert registry.get_sample_value(f"{n.M_GEN_AI_INVOKE_AGENT_DURATION}_count", labels) == 1


async def test_a_run_may_ask_for_less_than_the_agents_budget_never_more(
    telemetry: Telemetry,
) -> None:
    agent = scripted_agent(telemetry, budget_usd=1e-9)
    with pytest.raises(BudgetExceededError):
        await agent.arun("look up three things", budget_usd=100.0)  # capped at 1e-9
    roomy = scripted_agent(telemetry, budget_usd=None)
    with pytest.raises(BudgetExceededError):
        await roomy.arun("look up three things", budget_usd=1e-9)
    result = await scripted_agent(telemetry, budget_usd=100.0).arun("look up three things")
    assert result.output == "done"
    assert result.usage.cost_usd is not None
    assert result.usage.cost_usd > 0


async def test_a_streamed_run_stops_the_same_way(telemetry: Telemetry) -> None:
    agent = scripted_agent(telemetry, budget_usd=1e-9)
    with pytest.raises(BudgetExceededError):
        async for _ in agent.astream("look up three things"):
            pass


async def test_a_batch_over_its_budget_stops_taking_tasks_and_resumes_later(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    ran: list[str] = []

    async def work(task: Task) -> str:
        ran.append(task.id)
        priced_call(telemetry)  # $0.15 a task
        return task.id

    tasks = [Task(f"t{i}", "q") for i in range(6)]
    options = BatchOptions(workers=1, budget_usd=0.40)
    summary = await BatchProcessor(work, telemetry, options, sink=JsonlResultSink(out)).run(tasks)
    assert ran == ["t0", "t1", "t2"]  # the third crossed $0.40: no fourth started
    assert summary.budget_exceeded
    assert summary.cost_usd == pytest.approx(0.45)
    assert summary.counts == {"completed": 3, "cancelled": 3}
    records = await asyncio.to_thread(load_results, out)
    assert records["t0"]["cost_usd"] == pytest.approx(0.15)
    assert {i for i, r in records.items() if r["status"] == "completed"} == {"t0", "t1", "t2"}

    # again with the same budget: already spent, nothing starts
    again = await BatchProcessor(work, telemetry, options, sink=JsonlResultSink(out)).run(tasks)
    assert again.budget_exceeded
    assert ran == ["t0", "t1", "t2"]

    # a larger budget resumes: the rest run, each task's result once
    more = BatchOptions(workers=1, budget_usd=10.0)
    resumed = await BatchProcessor(work, telemetry, more, sink=JsonlResultSink(out)).run(tasks)
    assert ran == [f"t{i}" for i in range(6)]
    assert not resumed.budget_exceeded
    assert resumed.skipped == 3
    assert resumed.cost_usd == pytest.approx(0.90)  # the batch's: earlier tasks included
    records = await asyncio.to_thread(load_results, out)
    assert sorted(records) == [f"t{i}" for i in range(6)]
    assert all(r["status"] == TaskStatus.COMPLETED for r in records.values())


async def test_running_tasks_finish_when_the_budget_is_spent(telemetry: Telemetry) -> None:
    started: list[str] = []
    t1_running = asyncio.Event()

    async def work(task: Task) -> str:
        started.append(task.id)
        if task.id == "t0":
            await t1_running.wait()
            priced_call(telemetry)  # $0.15: over budget once it ends, t1 still running
            return task.id
        t1_running.set()
        for _ in range(3):  # t0 ends (and spends the budget) meanwhile
            await asyncio.sleep(0)
        return task.id

    tasks = [Task(f"t{i}", "q") for i in range(5)]
    processor = BatchProcessor(work, telemetry, BatchOptions(workers=2, budget_usd=0.1))
    summary = await processor.run(tasks)
    assert started == ["t0", "t1"]
    assert summary.counts == {"completed": 2, "cancelled": 3}
    assert processor.tasks["t1"].status is TaskStatus.COMPLETED
