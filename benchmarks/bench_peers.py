"""Instrumentation overhead against the peers, each variant in its own process.

The same agent workload (create_agent, the in-process builtin model at zero latency, one
tool call per run) runs bare, with agentwatch's own Agent, with agentwatch's instrumentor
on the bare graph (``AgentwatchInstrumentor``: users' own code, no change to it), with
OpenInference (openinference-instrumentation-langchain) and with OpenLLMetry
(opentelemetry-instrumentation-langchain). Every variant sends its spans through the
same pipeline: BatchSpanProcessor into an exporter that counts and drops them.
Processes are started in interleaved rounds, so drift on this noisy machine hits every
variant alike; ratios are taken per round.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from .common import machine, versions

PEER_VERSIONS = (
    "langchain",
    "langchain-core",
    "langgraph",
    "opentelemetry-sdk",
    "prometheus-client",
    "wrapt",
    "opentelemetry-instrumentation",
    "openinference-instrumentation-langchain",
    "opentelemetry-instrumentation-langchain",
)
VARIANTS = ("bare", "agentwatch", "instrumentor", "openinference", "openllmetry")
RUNS = 200
ROUNDS = 15


class CountingExporter(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


async def worker(variant: str, runs: int) -> dict[str, float]:
    from agentwatch.runtime.builtin_model.in_process import BuiltinChatModel
    from agentwatch.runtime.tools import BUNDLED_CORPUS, SearchIndex, builtin_tools
    from agentwatch.telemetry import Telemetry

    from .bench_agent import InstrumentedBuiltinChatModel, agent_runner, bare_runner

    exporter = CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=8192))
    tools = builtin_tools(SearchIndex.from_folder(BUNDLED_CORPUS))
    if variant == "agentwatch":
        telemetry = Telemetry(tracer_provider=provider, registry=CollectorRegistry())
        model = InstrumentedBuiltinChatModel(telemetry=telemetry, provider_name="agentwatch")
        run = agent_runner(model, tools, telemetry)
    else:
        if variant == "instrumentor":
            from agentwatch.runtime import AgentwatchInstrumentor

            telemetry = Telemetry(tracer_provider=provider, registry=CollectorRegistry())
            AgentwatchInstrumentor().instrument(telemetry=telemetry)
        elif variant == "openinference":
            from openinference.instrumentation.langchain import LangChainInstrumentor

            LangChainInstrumentor().instrument(tracer_provider=provider)
        elif variant == "openllmetry":
            from opentelemetry.instrumentation.langchain import LangchainInstrumentor

            LangchainInstrumentor().instrument(tracer_provider=provider)
        run = bare_runner(BuiltinChatModel(), tools)
    for _ in range(max(20, runs // 10)):
        await run()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(runs):
        await run()
    provider.force_flush()  # the spans' export is part of the cost (its thread's CPU too)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    spans_before = exporter.spans
    provider.shutdown()
    return {
        "us_per_run": elapsed / runs * 1e6,
        "cpu_us_per_run": cpu / runs * 1e6,
        "spans_per_run": spans_before / (runs + max(20, runs // 10)),
    }


def spawn(variant: str, runs: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_peers", "--worker", variant, str(runs)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(runs: int = RUNS, rounds: int = ROUNDS) -> list[str]:
    per: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for variant in VARIANTS:
            per[variant].append(spawn(variant, runs))
    per_round = {
        v: [
            r["cpu_us_per_run"] / b["cpu_us_per_run"]
            for r, b in zip(per[v], per["bare"], strict=True)
        ]
        for v in VARIANTS
    }
    ratios = {v: statistics.median(per_round[v]) for v in VARIANTS}
    lines = [
        "## 5. Instrumentation overhead against the peers",
        "",
        f"Measured {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC} on {machine()}; "
        + versions(*PEER_VERSIONS)
        + ".",
        "",
        f"Same agent workload (one tool call per run, in-process builtin model at zero latency), "
        f"{runs} sequential runs per process, each variant in its own process, {rounds} "
        "interleaved rounds; spans go through BatchSpanProcessor into a counting, dropping "
        "exporter in every variant (flushed inside the timing). Ratio: median over rounds of "
        "variant / bare of that round, in CPU time (the process's, every thread): on a "
        "shared machine wall time mostly measures the neighbours.",
        "",
        "| variant | CPU µs/run (median) | range | wall µs/run | ratio to bare | rounds' "
        "ratios | spans/run | also records |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    records = {
        "bare": "-",
        "agentwatch": "Prometheus histograms + exemplars, tool/LLM/agent metrics",
        "instrumentor": "the same, on the bare graph (AgentwatchInstrumentor)",
        "openinference": "spans only",
        "openllmetry": "spans only",
    }
    for v in VARIANTS:
        cpu = [r["cpu_us_per_run"] for r in per[v]]
        wall = statistics.median(r["us_per_run"] for r in per[v])
        spans = statistics.median(r["spans_per_run"] for r in per[v])
        lines.append(
            f"| {v} | {statistics.median(cpu):,.0f} | {min(cpu):,.0f}-{max(cpu):,.0f} | "
            f"{wall:,.0f} | {ratios[v]:.2f}x | {min(per_round[v]):.2f}-{max(per_round[v]):.2f} "
            f"| {spans:.1f} | {records[v]} |"
        )
    lines += [
        "",
        f"agentwatch {ratios['agentwatch']:.2f}x and its instrumentor "
        f"{ratios['instrumentor']:.2f}x vs OpenLLMetry {ratios['openllmetry']:.2f}x and "
        f"OpenInference {ratios['openinference']:.2f}x (target for agentwatch <= 1.10x: "
        f"{'met' if ratios['agentwatch'] <= 1.10 else 'NOT met'}; for the instrumentor "
        f"<= 1.15x: {'met' if ratios['instrumentor'] <= 1.15 else 'NOT met'}).",
        "",
    ]
    return lines


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        print(json.dumps(asyncio.run(worker(sys.argv[2], int(sys.argv[3])))))
    else:
        print("\n".join(run()))
