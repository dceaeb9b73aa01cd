"""Agent runs: uninstrumented LangChain vs agentwatch, in one process, interleaved.

Two workloads, each one tool call per run (two model calls):
- in-process zero-latency model (BuiltinChatModel): instrumentation's cost is as
  visible as it can be. Target: instrumented at most 1.10x the bare run.
- the builtin model over loopback HTTP (ChatOpenAI): what a user sees. Target:
  instrumentation under 3% of a run.
Both sides run the same agent graph (create_agent) and the same tool functions; the
instrumented side records spans (BatchSpanProcessor into a discarding exporter),
metrics and exemplars.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.tools import StructuredTool
from langchain_openai import ChatOpenAI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry

from agentwatch.runtime.agents.agent import (
    DEFAULT_AGENT_NAME,
    DEFAULT_SYSTEM_PROMPT,
    RECURSION_LIMIT,
    Agent,
)
from agentwatch.runtime.builtin_model import BuiltinModelServer
from agentwatch.runtime.builtin_model.in_process import BuiltinChatModel
from agentwatch.runtime.langchain.chat_model import InstrumentedChatModel, InstrumentedChatOpenAI
from agentwatch.runtime.tools import BUNDLED_CORPUS, SearchIndex, ToolRegistry, builtin_tools
from agentwatch.telemetry import Telemetry

from .common import DiscardingExporter, Measured

QUERY = "what is 2 + 3"
MODEL = "agentwatch-builtin"
Run = Callable[[], Awaitable[object]]


class InstrumentedBuiltinChatModel(InstrumentedChatModel, BuiltinChatModel):
    pass


def bare_runner(model: BaseChatModel, tools: ToolRegistry) -> Run:
    lc_tools = [
        StructuredTool(
            name=s.name, description=s.description, args_schema=s.args_schema, coroutine=s.func
        )
        for s in tools
    ]
    graph = create_agent(
        model, lc_tools, system_prompt=DEFAULT_SYSTEM_PROMPT, name=DEFAULT_AGENT_NAME
    )

    async def run() -> object:
        return await graph.ainvoke(
            {"messages": [{"role": "user", "content": QUERY}]},
            {"recursion_limit": RECURSION_LIMIT},
        )

    return run


def agent_runner(model: BaseChatModel, tools: ToolRegistry, telemetry: Telemetry) -> Run:
    agent = Agent(model, tools, telemetry=telemetry, model_name=MODEL)

    async def run() -> object:
        return await agent.arun(QUERY)

    return run


async def _trial(run: Run, runs: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(runs):
        await run()
    return (time.perf_counter_ns() - start) / runs / 1000  # µs per run


async def compare(variants: dict[str, Run], runs: int, trials: int) -> dict[str, Measured]:
    for run in variants.values():
        await _trial(run, max(1, runs // 5))  # warm up
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(trials):
        for name, run in variants.items():
            results[name].append(await _trial(run, runs))
    return {name: Measured(name, tuple(v)) for name, v in results.items()}


async def measure(fake_runs: int = 200, http_runs: int = 60, trials: int = 7) -> list[str]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingExporter(), max_queue_size=8192))
    telemetry = Telemetry(tracer_provider=provider, registry=CollectorRegistry())
    tools = builtin_tools(await asyncio.to_thread(SearchIndex.from_folder, BUNDLED_CORPUS))

    fake = await compare(
        {
            "bare": bare_runner(BuiltinChatModel(), tools),
            "agentwatch": agent_runner(
                InstrumentedBuiltinChatModel(telemetry=telemetry, provider_name="agentwatch"),
                tools,
                telemetry,
            ),
        },
        fake_runs,
        trials,
    )
    async with BuiltinModelServer() as server:
        common = {"model": MODEL, "base_url": server.base_url, "api_key": "bench"}
        http = await compare(
            {
                "bare": bare_runner(ChatOpenAI(**common), tools),
                "agentwatch": agent_runner(
                    InstrumentedChatOpenAI(
                        **common, telemetry=telemetry, provider_name="agentwatch"
                    ),
                    tools,
                    telemetry,
                ),
            },
            http_runs,
            trials,
        )
    provider.shutdown()
    return report(fake, http, fake_runs, http_runs, trials)


def _paired_ratio(m: dict[str, Measured]) -> float:
    """Median of per-trial ratios: each trial's pair ran back to back."""
    return statistics.median(
        a / b for a, b in zip(m["agentwatch"].trials, m["bare"].trials, strict=True)
    )


def report(
    fake: dict[str, Measured],
    http: dict[str, Measured],
    fake_runs: int,
    http_runs: int,
    trials: int,
) -> list[str]:
    fake_ratio = _paired_ratio(fake)
    http_ratio = _paired_ratio(http)
    lines = [
        "## 2. Agent runs: uninstrumented vs agentwatch",
        "",
        f"One tool call per run (query {QUERY!r}); {trials} interleaved trials of "
        f"{fake_runs} (in-process) / {http_runs} (HTTP) sequential runs; µs per run.",
        "",
        "| model | variant | µs/run (median) | range | runs/s |",
        "|---|---|---:|---:|---:|",
    ]
    for label, results in (("in-process, zero latency", fake), ("builtin over HTTP", http)):
        for m in results.values():
            lines.append(
                f"| {label} | {m.name} | {m.median:,.0f} | {m.spread} | {1e6 / m.median:,.0f} |"
            )
    lines += [
        "",
        f"- in-process: agentwatch / bare = {fake_ratio:.3f}x (target <= 1.10x: "
        f"{'met' if fake_ratio <= 1.10 else 'NOT met'})",
        f"- over HTTP: instrumentation = {(http_ratio - 1) * 100:+.1f}% of a run (target < 3%: "
        f"{'met' if http_ratio < 1.03 else 'NOT met'})",
        "",
    ]
    return lines


def run() -> list[str]:
    return asyncio.run(measure())
