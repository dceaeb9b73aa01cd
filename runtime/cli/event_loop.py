"""The event loop of a process agentwatch owns: uvloop's where it is installed (the
default), asyncio's own when ``AGENTWATCH_EVENT_LOOP=asyncio``.

Measured at 1 s model latency and 400 clients (benchmarks/RESULTS.md section 11g),
uvloop's loop took 7-9% less of the loop's CPU a run and gave 1.10-1.11x the runs/s,
with the adaptive limit and with none alike, at the same lag. Like the heap's settings
(heap.py), only ``serve``, ``worker``, ``batch`` and ``run`` do this: an application
embedding the runtime runs its own loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final, TypeVar

from agentwatch.telemetry import ConfigurationError

AGENTWATCH_EVENT_LOOP: Final = "AGENTWATCH_EVENT_LOOP"
LOOPS: Final = ("uvloop", "asyncio")

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(env: Mapping[str, str] = os.environ) -> LoopFactory:
    """The loop ``AGENTWATCH_EVENT_LOOP`` names (``uvloop`` or ``asyncio``; unset or
    empty: uvloop's when it can be imported, else asyncio's). ``ConfigurationError`` for
    another name, or for ``uvloop`` asked for where it is not installed."""
    name = env.get(AGENTWATCH_EVENT_LOOP, "").strip().lower()
    if name not in ("", *LOOPS):
        raise ConfigurationError(
            f"{AGENTWATCH_EVENT_LOOP}={name!r}: must be one of {', '.join(LOOPS)}"
        )
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        if name == "uvloop":
            raise ConfigurationError(
                f"{AGENTWATCH_EVENT_LOOP}=uvloop: uvloop is not installed ({exc})"
            ) from exc
        return asyncio.new_event_loop
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], env: Mapping[str, str] = os.environ) -> T:
    """``asyncio.run(main)`` on the loop ``loop_factory`` gives."""
    try:
        factory = loop_factory(env)
    except BaseException:
        main.close()  # never awaited: no warning on top of the error
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
