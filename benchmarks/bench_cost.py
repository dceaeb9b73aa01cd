"""Cost: what pricing every model call adds to an agent run (issue 17).

The agent benchmark's in-process workload (zero-latency model, one tool call, two model
calls a run) with the model answering as gpt-4o-mini, so that every call is priced from
the bundled table: its cost on the chat span, ``agentwatch_cost_usd_total`` with its
exemplar, the run's total on ``invoke_agent`` and in ``agentwatch_run_cost_usd``. The
"cost off" variant is the same agent in the same process with the call's pricing
(``LlmCallInvocation._record_cost``) replaced by a no-op, interleaved trial by trial.
Also the price lookup and arithmetic alone, per call.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from prometheus_client import CollectorRegistry

from agentwatch.runtime.agents.agent import Agent
from agentwatch.runtime.tools import BUNDLED_CORPUS, SearchIndex, builtin_tools
from agentwatch.telemetry import LlmCallInvocation, PriceTable, Telemetry

from .bench_agent import QUERY, InstrumentedBuiltinChatModel
from .common import DiscardingExporter, Measured

MODEL = "gpt-4o-mini"  # priced by the bundled table: $0.15 / $0.60 per million tokens


@contextmanager
def cost_off() -> Iterator[None]:
    recorded = LlmCallInvocation._record_cost
    LlmCallInvocation._record_cost = lambda self, exemplar: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        LlmCallInvocation._record_cost = recorded  # type: ignore[method-assign]


async def _trial(run: Callable[[], Awaitable[object]], runs: int) -> float:
    """µs of CPU (every thread of the process: the span processor's too) per run: on a
    shared machine, wall time measures the neighbours."""
    start = time.process_time_ns()
    for _ in range(runs):
        await run()
    return (time.process_time_ns() - start) / runs / 1000


async def measure(
    runs: int = 60, trials: int = 31
) -> tuple[dict[str, Measured], dict[str, Measured], float]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingExporter(), max_queue_size=8192))
    telemetry = Telemetry(tracer_provider=provider, registry=CollectorRegistry())
    tools = builtin_tools(await asyncio.to_thread(SearchIndex.from_folder, BUNDLED_CORPUS))
    model = InstrumentedBuiltinChatModel(
        model_name=MODEL, telemetry=telemetry, provider_name="agentwatch"
    )
    agent = Agent(model, tools, telemetry=telemetry, model_name=MODEL)

    async def run() -> object:
        return await agent.arun(QUERY)

    result = await agent.arun(QUERY)
    assert result.usage.cost_usd, "the benchmark's calls must be priced"
    await _trial(run, runs)  # warm up
    measured: dict[str, list[float]] = {"cost on": [], "cost off": []}
    for _ in range(trials):
        measured["cost on"].append(await _trial(run, runs))
        with cost_off():
            measured["cost off"].append(await _trial(run, runs))
    provider.shutdown()
    calls = _call_ns(trials)
    agent_runs = {name: Measured(name, tuple(v)) for name, v in measured.items()}
    return agent_runs, calls, _lookup_ns()


def _call_ns(trials: int, calls: int = 2_000) -> dict[str, Measured]:
    """CPU ns per recorded chat call (span, usage, metrics), with and without its pricing;
    spans end in the calling thread (SimpleSpanProcessor into a discarding exporter)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(DiscardingExporter()))
    telemetry = Telemetry(tracer_provider=provider, registry=CollectorRegistry())

    def trial() -> float:
        start = time.process_time_ns()
        with telemetry.agent_run("bench", MODEL):  # the run's Spend, as in an agent run
            for _ in range(calls):
                with telemetry.llm_call(MODEL, "agentwatch") as call:
                    call.set_response(response_model=MODEL, input_tokens=120, output_tokens=40)
        return (time.process_time_ns() - start) / calls

    trial()  # warm up
    measured: dict[str, list[float]] = {"cost on": [], "cost off": []}
    for _ in range(trials):
        measured["cost on"].append(trial())
        with cost_off():
            measured["cost off"].append(trial())
    return {name: Measured(name, tuple(v)) for name, v in measured.items()}


def _lookup_ns(calls: int = 100_000) -> float:
    """ns per call of what pricing a call costs: the cached lookup and the arithmetic."""
    table = PriceTable()
    table.price("agentwatch", MODEL)  # looked up once, then cached
    start = time.perf_counter_ns()
    for _ in range(calls):
        price = table.price("agentwatch", MODEL)
        assert price is not None
        price.cost(120, 40, 64, 0)
    return (time.perf_counter_ns() - start) / calls


def _ratio(on: Measured, off: Measured) -> float:
    return statistics.median(a / b for a, b in zip(on.trials, off.trials, strict=True))


def report(
    results: dict[str, Measured],
    calls: dict[str, Measured],
    lookup_ns: float,
    runs: int,
    trials: int,
) -> list[str]:
    on, off = results["cost on"], results["cost off"]
    ratio = _ratio(on, off)
    call_on, call_off = calls["cost on"], calls["cost off"]
    lines = [
        "## 10. Cost: pricing every model call",
        "",
        f"The agent benchmark's in-process run (query {QUERY!r}, two model calls) answering "
        f"as {MODEL}, every call priced; {trials} interleaved trials of {runs} sequential runs; "
        "CPU µs per run (all threads). 'cost off' replaces the call's pricing with a no-op.",
        "",
        "| variant | CPU µs/run (median) | range |",
        "|---|---:|---:|",
    ]
    for m in (on, off):
        lines.append(f"| {m.name} | {m.median:,.0f} | {m.spread} |")
    lines += [
        "",
        f"- cost on / cost off = {ratio:.3f}x (paired median); "
        f"{(on.median - off.median):+,.0f} µs per run",
        f"- one recorded chat call (span, usage, metrics) inside a run: {call_on.median:,.0f} ns "
        f"with its pricing, {call_off.median:,.0f} ns without "
        f"({call_on.median - call_off.median:+,.0f} ns, {_ratio(call_on, call_off):.3f}x paired)",
        f"- price lookup (cached per provider and model) + arithmetic: {lookup_ns:,.0f} ns a call",
        "",
    ]
    return lines


def run(runs: int = 60, trials: int = 31) -> list[str]:
    results, calls, lookup = asyncio.run(measure(runs, trials))
    return report(results, calls, lookup, runs, trials)


if __name__ == "__main__":
    print("\n".join(run()))
