"""``agentwatch demo``: the whole runtime under load, observed end to end.

It starts the service on a loopback port (with the builtin model unless OPENAI_API_KEY
is set) and drives the seed's scenarios through its HTTP API: concurrent research
queries, a streamed answer, a batch with a progress bar, and a retry storm from
injected faults. Then it scrapes its own ``/metrics`` as Prometheus would and prints
the performance report, with what each model and run cost (the builtin model answers as
gpt-4o-mini, priced from the bundled table, unless AGENTWATCH_MODEL names another).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentwatch.telemetry import Telemetry, format_report, setup_telemetry, stats_from_text

from ..agents.agent_runtime import AgentRuntime
from ..builtin_model import ModelBehavior
from ..events import read_sse
from ..http.serving import make_runner, start_site
from ..retry import RetryPolicy
from ..service.app import create_app
from ..settings import AGENTWATCH_MODEL, DEFAULT_OPENAI_MODEL, RuntimeSettings

RESEARCH = (
    "what is 123 + 456",
    "search for exemplars",
    "calculate (17 * 23) - 4 ** 3",
    "find docs about label cardinality",
    "what is 2 ^ 32",
    "look up retries with jitter",
    "calculate __import__('os')",
    "hello",
)
STORM = ModelBehavior(error_rate=0.35, fail_status=429, retry_after=0.05, seed=11)


def setup() -> Telemetry:
    """The commands' telemetry: ``setup_telemetry()`` and its one export policy (no OTLP
    endpoint and no OTEL_TRACES_EXPORTER: spans stay in-process, where they still give
    the exemplars, rather than retrying a collector that is not there)."""
    return setup_telemetry()


async def main(telemetry: Telemetry, port: int = 0) -> int:
    console = Console()
    settings = dataclasses.replace(RuntimeSettings.from_env(), port=port)
    if settings.uses_builtin_model and not os.environ.get(AGENTWATCH_MODEL):
        # the builtin model answers as a model the bundled price table knows, so that
        # the report shows what the demo would have cost
        settings = dataclasses.replace(settings, model=DEFAULT_OPENAI_MODEL)
    runtime = AgentRuntime(
        settings, telemetry, retry_policy=RetryPolicy(base_delay=0.05, max_delay=0.5)
    )
    await runtime.start()
    runner = make_runner(create_app(settings, telemetry, runtime=runtime))
    try:
        await runner.setup()
        await start_site(runner, "127.0.0.1", port)  # BindError: the CLI names --port
    except BaseException:
        await runner.cleanup()
        await runtime.stop()
        raise
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    model = (
        f"the builtin model (as {settings.model})"
        if settings.uses_builtin_model
        else settings.model
    )
    console.rule(f"agentwatch demo: {base} with {model}")
    try:
        async with aiohttp.ClientSession() as session:
            await _research(session, base, console)
            await _stream(session, base, console)
            await _batch(session, base, console)
            await _storm(session, base, runtime, console)
            async with session.get(f"{base}/metrics") as response:
                text = await response.text()
        console.rule("performance report (scraped from /metrics)")
        print(format_report(stats_from_text(text), title=f"Performance report ({base}/metrics)"))
        _retry_counts(text, console)
        console.print(
            "The demo's service has stopped. Keep one up with [bold]agentwatch serve[/bold] "
            "(metrics at http://127.0.0.1:8080/metrics), or bring up the whole stack "
            "(runtime, Prometheus, Grafana, Jaeger) with [bold]docker compose up[/bold] "
            "and open Grafana at http://localhost:3000."
        )
    finally:
        await runner.cleanup()
        await runtime.stop()
        telemetry.shutdown()  # AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT
    return 0


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    async with session.post(url, json=body) as response:
        return await response.json()


async def _research(session: aiohttp.ClientSession, base: str, console: Console) -> None:
    queries = list(RESEARCH) * 4
    console.rule(f"1. {len(queries)} concurrent research queries (POST /v1/runs)")
    results = await asyncio.gather(
        *(_post(session, f"{base}/v1/runs", {"input": q}) for q in queries)
    )
    for query, body in list(zip(queries, results, strict=True))[: len(RESEARCH)]:
        answer = body.get("output") or body.get("error", {}).get("message", "")
        trace = str(body.get("trace_id") or "-")[:8]
        console.print(f"  {query[:28]:28} -> {answer[:34]:34} [dim]{trace}[/dim]", highlight=False)


async def _stream(session: aiohttp.ClientSession, base: str, console: Console) -> None:
    console.rule("2. a streamed answer (Server-Sent Events)")
    body = {"input": "search for time to first token", "stream": True}
    async with session.post(f"{base}/v1/runs", json=body) as response:
        async for event, data in read_sse(aiter(response.content)):
            if event == "tool_call":
                console.print(f"  [cyan][tool {data['name']} {data['arguments']}][/cyan]")
            elif event == "text":
                console.print(data["text"], end="", soft_wrap=True, highlight=False)
            elif event == "result":
                trace = data.get("trace_id") or "not exported (set OTEL_EXPORTER_OTLP_ENDPOINT)"
                console.print(f"\n  [dim]trace {trace}[/dim]")
            elif event == "error":
                console.print(f"\n  [red]{data['message']}[/red]")


async def _batch(session: aiohttp.ClientSession, base: str, console: Console) -> None:
    tasks = [
        {"id": f"task-{i}", "query": RESEARCH[i % len(RESEARCH)], "priority": i % 3}
        for i in range(60)
    ]
    console.rule(f"3. a batch of {len(tasks)} tasks (POST /v1/batches), 6 workers")
    created = await _post(session, f"{base}/v1/batches", {"tasks": tasks, "workers": 6})
    view: dict[str, Any] = {}
    with Progress(
        TextColumn("  batch"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    ) as progress:  # fmt: skip
        bar = progress.add_task("batch", total=len(tasks))
        for _ in range(1200):  # bounded: 60 s
            async with session.get(f"{base}{created['url']}") as response:
                view = await response.json()
            progress.update(bar, completed=view["done"])
            if view["state"] != "running":
                break
            await asyncio.sleep(0.05)
    console.print(f"  {view.get('state')}: {view.get('counts')}")


async def _storm(
    session: aiohttp.ClientSession, base: str, runtime: AgentRuntime, console: Console
) -> None:
    console.rule("4. a retry storm: the model answers 35% of requests with 429")
    server = runtime.model_server
    if server is None:
        console.print("  (skipped: faults can only be injected into the builtin model)")
        return
    normal = server.state.behavior
    server.configure(STORM)
    try:
        queries = [RESEARCH[i % len(RESEARCH)] for i in range(24)]
        results = await asyncio.gather(
            *(_post(session, f"{base}/v1/runs", {"input": q}) for q in queries)
        )
    finally:
        server.configure(normal)
    failed = sum(1 for r in results if "error" in r)
    console.print(f"  {len(results) - failed} runs answered, {failed} gave up")


def _retry_counts(text: str, console: Console) -> None:
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("agentwatch_retry_attempts_total{") and 'operation="chat"' in line:
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = float(line.rsplit(" ", 1)[1])
    console.print(
        "Model call attempts: "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(counts.items()))
        + " (agentwatch_retry_attempts_total)"
    )
