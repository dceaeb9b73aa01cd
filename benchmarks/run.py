"""`make bench` (``python -m benchmarks.run``): run every benchmark, rewrite RESULTS.md."""

from __future__ import annotations

import datetime

from benchmarks import (
    bench_admission,
    bench_agent,
    bench_batch,
    bench_cost,
    bench_event_loop,
    bench_failing,
    bench_frontier,
    bench_heap,
    bench_observe,
    bench_peers,
    bench_profile,
    bench_redis,
    bench_request_body,
    bench_scale,
    bench_stream,
    bench_transport,
    bench_workers,
)
from benchmarks.common import RESULTS, machine, versions


def main() -> int:
    sections = [
        bench_observe.run(),
        bench_agent.run(),
        bench_stream.run(),
        bench_batch.run(),
        bench_peers.run(),
        bench_scale.run(),
        bench_profile.run(),
        bench_cost.run(),
        bench_admission.run(),
        bench_frontier.run(),
        bench_transport.run(),
        bench_heap.run(),
        bench_request_body.run(),
        bench_failing.run(),
        bench_event_loop.run(),
        bench_workers.run(),
        bench_redis.run(),
    ]
    header = [
        "# Benchmark results",
        "",
        "Written by `make bench` (benchmarks/run.py); do not edit by hand.",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}",
        "- versions: "
        + versions(
            "opentelemetry-sdk",
            "prometheus-client",
            "aiohttp",
            "langchain",
            "langchain-core",
            "langgraph",
            "openai",
            "openinference-instrumentation-langchain",
            "opentelemetry-instrumentation-langchain",
            "genai-prices",
        ),
        "",
    ]
    text = "\n".join(header + [line for section in sections for line in section])
    RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
