"""Streaming: what instrumentation adds per chunk (target: under 10 µs per chunk).

The same in-process model (zero latency) streams the same long answer, bare and
instrumented (time to first chunk, per-chunk gaps, usage, one span per call), in
interleaved trials in one process.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry

from agentwatch.runtime.builtin_model.in_process import BuiltinChatModel
from agentwatch.runtime.langchain.chat_model import InstrumentedChatModel
from agentwatch.telemetry import Telemetry

from .common import DiscardingExporter, Measured

LONG_RESULT = " ".join(f"word{i}" for i in range(300))
MESSAGES: list[BaseMessage] = [
    HumanMessage("search for a long passage"),
    AIMessage(
        "",
        tool_calls=[
            {"id": "call_1", "name": "search", "args": {"query": "x"}, "type": "tool_call"}
        ],
    ),
    ToolMessage(LONG_RESULT, tool_call_id="call_1"),
]


class InstrumentedBuiltin(InstrumentedChatModel, BuiltinChatModel):
    pass


async def _trial(model: BaseChatModel, streams: int) -> tuple[float, int]:
    chunks = 0
    start = time.perf_counter_ns()
    for _ in range(streams):
        async for _chunk in model.astream(MESSAGES):
            chunks += 1
    return (time.perf_counter_ns() - start) / 1000, chunks


async def measure(streams: int = 40, trials: int = 7) -> list[str]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingExporter(), max_queue_size=8192))
    telemetry = Telemetry(tracer_provider=provider, registry=CollectorRegistry())
    models: dict[str, BaseChatModel] = {
        "bare": BuiltinChatModel(),
        "agentwatch": InstrumentedBuiltin(telemetry=telemetry, provider_name="agentwatch"),
    }
    per_chunk: dict[str, list[float]] = {name: [] for name in models}
    chunk_count = 0
    for model in models.values():
        await _trial(model, 5)
    for _ in range(trials):
        for name, model in models.items():
            total_us, chunks = await _trial(model, streams)
            per_chunk[name].append(total_us / chunks)
            chunk_count = chunks // streams
    provider.shutdown()
    results = {name: Measured(name, tuple(v)) for name, v in per_chunk.items()}
    added = statistics.median(
        a - b for a, b in zip(results["agentwatch"].trials, results["bare"].trials, strict=True)
    )
    lines = [
        "## 3. Streaming: cost per chunk",
        "",
        f"{streams} streams of {chunk_count} chunks x {trials} interleaved trials, in-process "
        "model at zero latency; µs per chunk (the whole stream divided by its chunks).",
        "",
        "| variant | µs/chunk (median) | range |",
        "|---|---:|---:|",
    ]
    lines += [f"| {m.name} | {m.median:,.1f} | {m.spread} |" for m in results.values()]
    verdict = "met" if added < 10 else "NOT met"
    lines += ["", f"Added per chunk: {added:.1f} µs (target < 10 µs: {verdict}).", ""]
    return lines


def run() -> list[str]:
    return asyncio.run(measure())
