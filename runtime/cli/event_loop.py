"""The event loop of a process agentwatch owns: uvloop's where it is installed (the
default), asyncio's own when ``AGENTWATCH_EVENT_LOOP=asyncio``.

Measured at 1 s model latency and 400 clients (benchmarks/RESULTS.md section 11g),
uvloop's loop took 7-9% less of the loop's CPU a run and gave 1.10-1.11x the runs/s
(medians of three rounds' ratios), with the adaptive limit and with none alike, at the
same lag. Like the heap's settings (heap.py), only ``serve``, ``worker``, ``batch`` and
``run`` do this: an application embedding the runtime runs its own loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final, TypeVar, cast

from agentwatch.telemetry import ConfigurationError

AGENTWATCH_EVENT_LOOP: Final = "AGENTWATCH_EVENT_LOOP"
LOOPS: Final = ("uvloop", "asyncio")

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(env: Mapping[str, str] = os.environ) -> LoopFactory | None:
    """The loop ``AGENTWATCH_EVENT_LOOP`` names: ``uvloop`` (unset or empty: uvloop's
    when it can be imported) or ``asyncio`` (None: asyncio's own, made as ``asyncio.run``
    makes it). ``ConfigurationError`` for another name, or for ``uvloop`` asked for
    where it is not installed: commands ask first thing, before they start anything."""
    given = env.get(AGENTWATCH_EVENT_LOOP, "")
    name = given.strip().lower()
    if name not in ("", *LOOPS):
        raise ConfigurationError(
            f"{AGENTWATCH_EVENT_LOOP}={given!r}: must be one of {', '.join(LOOPS)}"
        )
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        if name == "uvloop":
            raise ConfigurationError(
                f"{AGENTWATCH_EVENT_LOOP}=uvloop: uvloop is not installed ({exc})"
            ) from exc
        return None
    return cast(LoopFactory, uvloop.new_event_loop)


def run(main: Coroutine[Any, Any, T], factory: LoopFactory | None) -> T:
    """``asyncio.run(main)`` on the loop ``factory`` makes (``loop_factory``'s)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
