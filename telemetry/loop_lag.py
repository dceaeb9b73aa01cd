"""Event loop lag: how late the loop runs a timer, sampled continuously.

A loop that is late by 100 ms delays every request and every stream by as much. The
monitor sleeps ``interval`` and records how much longer it took into
``agentwatch_event_loop_lag_seconds``; run it as a task of the service.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from .core import Telemetry


async def monitor_loop_lag(
    telemetry: Telemetry, interval: float = 0.02, *, samples: int | None = None
) -> None:
    """Record lag until cancelled (or after ``samples`` samples)."""
    loop = asyncio.get_running_loop()
    histogram = telemetry.metrics.event_loop_lag
    taken = 0
    while samples is None or taken < samples:
        before = loop.time()
        await asyncio.sleep(interval)
        histogram.observe(max(0.0, loop.time() - before - interval))
        taken += 1


async def loop_lag_ctx(telemetry: Telemetry, interval: float = 0.02) -> AsyncIterator[None]:
    """For ``app.cleanup_ctx``: the monitor runs as long as the application."""
    task = asyncio.get_running_loop().create_task(
        monitor_loop_lag(telemetry, interval), name="agentwatch-loop-lag"
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
