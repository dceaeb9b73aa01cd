"""``agentwatch worker --redis URL [--concurrency N] [--metrics-port P]``: a worker
process on any machine, running tasks of any batch from the Redis queue with the agent,
as the local batch runs them (``BatchProcessor.serve``: the same spans, timeouts and
statuses; each task's span continues its batch's trace). It serves its own /metrics.

SIGTERM/SIGINT: take no more tasks, finish the running ones, write them, exit 0; a
second one cancels the running tasks, which go back to the queue at once. A worker
killed outright loses nothing: its tasks are taken again by another worker once the
visibility timeout (``AGENTWATCH_REDIS_VISIBILITY_TIMEOUT``, 30 s) has passed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import socket
import uuid
from typing import Final

from rich.console import Console

from agentwatch.telemetry import MetricsServer, Telemetry, setup_telemetry

from ..agents.agent_runtime import AgentRuntime
from ..batch.processor import BatchOptions, BatchProcessor, BatchSummary
from ..batch.redis_queue import QueueOptions, RedisClient, safe_url
from ..batch.redis_worker import RedisTaskSource
from ..settings import RuntimeSettings
from . import event_loop
from .batch import stderr_console
from .exits import EXIT_CANNOT_LISTEN, EXIT_OK, CliError
from .heap import settle_heap
from .progress import agent_work, install_signals

METRICS_PORT: Final = 9464  # the OpenTelemetry Prometheus exporter's port

WORKER_EPILOG: Final = """\
Each worker serves /metrics (--metrics-port; 0 picks a free port, printed at start).
AGENTWATCH_REDIS_VISIBILITY_TIMEOUT (s, default 30): a task whose worker went quiet
this long is taken by another; AGENTWATCH_REDIS_MAX_DELIVERIES (default 5): a task
taken this many times without finishing ends failed (dead letter). docs/scale-out.md
"""


def worker_command(args: argparse.Namespace) -> int:
    """``agentwatch worker``: serve the Redis queue until SIGTERM/SIGINT."""
    options = QueueOptions.from_env(os.environ)
    loop = event_loop.loop_factory()  # a loop it cannot make refused before anything
    # The queue's Redis is the rate limits' too: every worker spends one budget.
    settings = dataclasses.replace(RuntimeSettings.from_env(), redis_url=args.redis)
    console = stderr_console()
    telemetry = setup_telemetry()
    try:
        try:
            metrics = MetricsServer(telemetry, host=args.metrics_host, port=args.metrics_port)
            metrics.start()
        except OSError as exc:
            raise CliError(
                f"cannot serve /metrics on {args.metrics_host}:{args.metrics_port} "
                f"(--metrics-host, --metrics-port): {exc.strerror or exc}",
                EXIT_CANNOT_LISTEN,
            ) from exc
        try:
            ready = (
                f"agentwatch worker: taking tasks from {safe_url(args.redis)}, "
                f"{args.concurrency} at once; metrics on "
                f"http://{args.metrics_host}:{metrics.port}/metrics"
            )
            summary = event_loop.run(
                serve_queue(
                    args.redis, args.concurrency, options, settings, telemetry, console, ready
                ),
                loop,
            )
        finally:
            metrics.stop()
    finally:
        telemetry.shutdown()
    counts = ", ".join(f"{status} {n}" for status, n in sorted(summary.counts.items()))
    print(f"agentwatch worker: stopped; tasks here: {counts or 'none'}", flush=True)
    return EXIT_OK


async def serve_queue(
    url: str,
    concurrency: int,
    options: QueueOptions,
    settings: RuntimeSettings,
    telemetry: Telemetry,
    console: Console,
    ready: str = "",
) -> BatchSummary:
    """Run the queue's tasks, ``concurrency`` at once, until drained; ``ready`` is
    printed once the agent is ready to run them."""
    client = RedisClient(url, telemetry)
    consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    source = RedisTaskSource(client, options, consumer=consumer)
    try:
        async with AgentRuntime(settings, telemetry) as runtime:
            settle_heap()  # this process's: start-up's objects out of the collector's reach
            work = agent_work(runtime.agent)
            batch_options = BatchOptions(workers=concurrency, concurrency=concurrency)
            processor = BatchProcessor(work, telemetry, batch_options, batch_id=consumer)
            source.on_cancel = processor.cancel
            loop = asyncio.get_running_loop()
            install_signals(loop, processor.drain, processor.cancel, console)
            try:
                async with source.running():
                    if ready:
                        print(ready, flush=True)
                    return await processor.serve(source)
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
    finally:
        await client.close()
