"""A failed run is freed by reference counting, not left in a reference cycle for the
next full collection: its error's traceback -> LangChain's and LangGraph's frames (or the
stream's span) -> the error, with the run's spans, messages and callback managers
(agents/frames.py; telemetry's ``_StreamSpan.end``). Here ~430 objects a failed run
before, ~9 after. And a failed run is not kept alive instead (a pooled connection kept the run
that opened it until model_http opened connections in an empty context)."""

from __future__ import annotations

import asyncio
import gc
import heapq
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import openai
import pytest

from agentwatch.runtime.agents.agent_runtime import AgentRuntime
from agentwatch.runtime.builtin_model import ModelBehavior
from agentwatch.runtime.retry import RetryPolicy
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import AgentRunInvocation, Telemetry

ALWAYS_500 = ModelBehavior(error_rate=1.0, fail_status=500, seed=5)
ONCE = RetryPolicy(max_tries=2, base_delay=0.01, max_delay=0.02, max_time=5)
RUNS = 20
# objects in cycles a failed run may leave (start-up's few, counted here too)
PER_RUN = 100


def forget_cancelled_timers() -> None:
    """Drop the loop's cancelled timers, as asyncio itself does once they are half its
    heap: a request's read timeout, cancelled, keeps its run's context until then
    (bounded, model_http.py), which depends on what else the loop has scheduled."""
    loop: Any = asyncio.get_running_loop()
    loop._scheduled[:] = [timer for timer in loop._scheduled if not timer.cancelled()]
    heapq.heapify(loop._scheduled)
    loop._timer_cancelled_count = 0


@pytest.fixture
def collector_off() -> Iterator[None]:
    """No automatic collection while the runs go: what they leave in cycles stays there
    to be counted."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("stream", [False, True], ids=["arun", "astream"])
async def test_a_failed_run_leaves_nothing_in_reference_cycles(
    telemetry: Telemetry, collector_off: None, stream: bool
) -> None:
    settings = replace(RuntimeSettings(), model_timeout=5.0, run_timeout=30)
    async with AgentRuntime(
        settings, telemetry, model_behavior=ALWAYS_500, retry_policy=ONCE
    ) as runtime:
        agent = runtime.agent

        async def fails(i: int) -> bool:
            try:
                if stream:
                    async for _ in agent.astream(f"what is {i} + 1"):
                        pass
                else:
                    await agent.arun(f"what is {i} + 1")
            except openai.InternalServerError:
                return True  # the error let go of here, as a caller would
            return False

        gc.collect()  # start-up's own
        failed = await asyncio.wait_for(asyncio.gather(*(fails(i) for i in range(RUNS))), 60)
        assert all(failed), failed
        in_cycles = gc.collect()
        # and none is kept alive instead (so none could hide a cycle from the count):
        # one at most, the run whose context the connector's keep-alive timer has
        forget_cancelled_timers()
        kept = sum(isinstance(o, AgentRunInvocation) for o in gc.get_objects())
    assert in_cycles <= PER_RUN * RUNS, f"{in_cycles} objects in cycles after {RUNS} failed runs"
    assert kept <= 1, f"{kept} of {RUNS} failed runs still alive"
