"""``agentwatch run "query" [--stream]``: one run, its answer, tool calls, trace id,
tokens and cost printed (with ``--stream``, as they arrive)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncGenerator
from contextlib import aclosing

from agentwatch.telemetry import Telemetry, setup_telemetry

from ..agents.agent_runtime import AgentRuntime
from ..events import RunEvent, RunFinished, TextDelta, ToolCallFinished, ToolCallStarted
from ..results import trace_line, usage_line
from ..settings import RuntimeSettings
from . import event_loop
from .exits import EXIT_OK


def run_command(args: argparse.Namespace) -> int:
    settings = RuntimeSettings.from_env()
    loop = event_loop.loop_factory()
    telemetry = setup_telemetry()  # the commands' one export policy
    try:
        return event_loop.run(_run_once(settings, telemetry, args.query, args.stream), loop)
    finally:
        telemetry.shutdown()  # AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT


async def _run_once(
    settings: RuntimeSettings, telemetry: Telemetry, query: str, stream: bool
) -> int:
    async with AgentRuntime(settings, telemetry) as runtime:
        unpriced = settings.run_budget_usd is not None and runtime.agent.unpriced_budget()
        if unpriced:
            print(f"agentwatch run: warning: {unpriced}", file=sys.stderr, flush=True)
        if stream:
            return await _typewriter(runtime.agent.astream(query))
        result = await runtime.agent.arun(query)
    for call in result.tool_calls:
        status = "failed" if call.error else "ok"
        print(f"[tool {call.name} {call.arguments} -> {status}]")
    print(result.output)
    print(f"{trace_line(result)}  {usage_line(result.usage)}")
    return EXIT_OK


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
                print()
                print(f"{trace_line(event.result)}  {usage_line(event.result.usage)}")
    return EXIT_OK
