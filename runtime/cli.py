"""The ``agentwatch`` command line: ``demo | serve | run | report | model``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from pathlib import Path

from aiohttp import web

from agentwatch.telemetry import (
    AgentwatchError,
    Telemetry,
    fetch_metrics_text,
    format_report,
    setup_telemetry,
    stats_from_text,
)

from . import demo
from .events import RunEvent, RunFinished, TextDelta, ToolCallFinished, ToolCallStarted
from .model import ModelBehavior, create_model_app
from .runtime import AgentRuntime
from .server import create_app
from .settings import RuntimeSettings


def _report(args: argparse.Namespace) -> int:
    try:
        text = fetch_metrics_text(args.url, timeout=args.timeout)
    except (OSError, ValueError) as exc:
        print(f"agentwatch report: cannot read {args.url}: {exc}", file=sys.stderr)
        return 2
    try:
        rows = stats_from_text(text)
    except ValueError:
        print(f"agentwatch report: {args.url} is not a Prometheus metrics page", file=sys.stderr)
        return 2
    print(format_report(rows, title=f"Performance report ({args.url})"), end="")
    return 0


def _demo(args: argparse.Namespace) -> int:
    return asyncio.run(demo.main(demo.setup(), port=args.port))


def _settings(args: argparse.Namespace) -> RuntimeSettings:
    settings = RuntimeSettings.from_env()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if not overrides:
        return settings
    from dataclasses import replace

    return replace(settings, **overrides)


async def _freeze_startup_objects(app: web.Application) -> None:
    """Move everything imported and built at start-up out of the garbage collector's
    reach: a full collection over LangChain's ~190,000 start-up objects took ~85 ms
    here, a stall every in-flight run would feel. Only the service's own process does
    this; an application embedding ``create_app`` decides for itself."""
    gc.collect()
    gc.freeze()


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    telemetry = setup_telemetry()
    model = "the builtin model" if settings.uses_builtin_model else settings.model
    print(f"agentwatch serving on http://{settings.host}:{settings.port} with {model}")
    app = create_app(settings, telemetry)
    app.on_startup.append(_freeze_startup_objects)
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            print=None,
            access_log=None,
            handler_cancellation=True,  # a client that goes away cancels its run
            shutdown_timeout=10.0,  # SIGTERM: in-flight runs get this long, then are cancelled
        )
    finally:
        telemetry.shutdown()  # AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT
    return 0


async def _run_once(
    settings: RuntimeSettings, telemetry: Telemetry, query: str, stream: bool
) -> int:
    async with AgentRuntime(settings, telemetry) as runtime:
        if stream:
            return await _typewriter(runtime.agent.astream(query))
        result = await runtime.agent.arun(query)
    for call in result.tool_calls:
        status = "failed" if call.error else "ok"
        print(f"[tool {call.name} {call.arguments} -> {status}]")
    print(result.output)
    trace = f"trace_id: {result.trace_id}" if result.sampled else "trace not sampled"
    print(f"{trace}  tokens: {result.usage.input_tokens} in, {result.usage.output_tokens} out")
    return 0


async def _typewriter(events: AsyncGenerator[RunEvent, None]) -> int:
    """Print the answer as it arrives, tool calls as they happen."""
    async with aclosing(events):
        async for event in events:
            if isinstance(event, TextDelta):
                print(event.text, end="", flush=True)
            elif isinstance(event, ToolCallStarted):
                print(f"[tool {event.name} {event.arguments}]", flush=True)
            elif isinstance(event, ToolCallFinished):
                status = "failed" if event.error else "ok"
                print(f"[tool {event.name} -> {status}: {event.result[:80]}]", flush=True)
            elif isinstance(event, RunFinished):
                usage, done = event.result.usage, event.result
                trace = f"trace_id: {done.trace_id}" if done.sampled else "trace not sampled"
                print()
                print(f"{trace}  tokens: {usage.input_tokens} in, {usage.output_tokens} out")
    return 0


def _run(args: argparse.Namespace) -> int:
    settings = RuntimeSettings.from_env()
    telemetry = demo.setup()
    try:
        return asyncio.run(_run_once(settings, telemetry, args.query, args.stream))
    finally:
        telemetry.shutdown()  # AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT


def _batch(args: argparse.Namespace) -> int:
    from .batch import BatchInputError, BatchOptions, read_tasks
    from .batch.cli import print_summary, run_batch, stderr_console

    console = stderr_console()
    try:
        tasks = read_tasks(Path(args.tasks))
    except BatchInputError as exc:
        console.print(f"[red]agentwatch batch: {exc}[/red]\nThe batch did not start.")
        return 2
    except OSError as exc:
        console.print(f"[red]agentwatch batch: cannot read {args.tasks}: {exc}[/red]")
        return 2
    options = BatchOptions(
        workers=args.workers, concurrency=args.concurrency, task_timeout=args.timeout
    )
    telemetry = demo.setup()
    out = Path(args.out)
    try:
        summary, stopped = asyncio.run(
            run_batch(tasks, out, options, RuntimeSettings.from_env(), telemetry, console)
        )
    finally:
        telemetry.shutdown()  # AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT
    print_summary(summary, out, console)
    return 3 if stopped else 0


def _model(args: argparse.Namespace) -> int:
    behavior = ModelBehavior(
        latency=args.latency,
        time_to_first_token=args.ttft,
        tokens_per_second=args.tokens_per_second,
        error_rate=args.error_rate,
        fail_status=args.fail_status,
        seed=args.seed,
    )
    print(f"builtin model on http://{args.host}:{args.port}/v1")
    web.run_app(
        create_model_app(behavior), host=args.host, port=args.port, print=None, access_log=None
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentwatch", description="An async agent runtime with observability built in."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo_cmd = commands.add_parser("demo", help="run the demo workload and print the report")
    demo_cmd.add_argument("--port", type=int, default=0, help="service port (0: any free one)")
    demo_cmd.set_defaults(func=_demo)

    serve = commands.add_parser("serve", help="serve /v1/runs and /metrics")
    serve.add_argument("--host", help="bind address (default 127.0.0.1, or AGENTWATCH_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8080, or AGENTWATCH_PORT)")
    serve.set_defaults(func=_serve)

    run = commands.add_parser("run", help="run one query and print the answer and trace id")
    run.add_argument("query")
    run.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    run.set_defaults(func=_run)

    batch = commands.add_parser("batch", help="run a JSONL file of tasks with a progress bar")
    batch.add_argument("tasks", help='JSONL: {"id": ..., "query": ..., "priority": 0-9}')
    batch.add_argument("--out", required=True, help="results JSONL (resumed if it exists)")
    batch.add_argument("--workers", type=int, default=5)
    batch.add_argument("--concurrency", type=int, help="at most this many at once")
    batch.add_argument("--timeout", type=float, help="seconds per task")
    batch.set_defaults(func=_batch)

    report = commands.add_parser("report", help="print the performance report of a /metrics URL")
    report.add_argument("--url", default="http://127.0.0.1:8080/metrics")
    report.add_argument("--timeout", type=float, default=10.0)
    report.set_defaults(func=_report)

    model = commands.add_parser("model", help="run the builtin OpenAI-compatible model alone")
    model.add_argument("--host", default="127.0.0.1")
    model.add_argument("--port", type=int, default=8081)
    model.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    model.add_argument("--ttft", type=float, default=0.0, help="seconds to first streamed token")
    model.add_argument("--tokens-per-second", type=float, default=0.0)
    model.add_argument("--error-rate", type=float, default=0.0)
    model.add_argument("--fail-status", type=int, default=429)
    model.add_argument("--seed", type=int, default=0)
    model.set_defaults(func=_model)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (AgentwatchError, ValueError) as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
