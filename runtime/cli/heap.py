"""The garbage collector of a process that runs agents, set once its runtime has started.

A full collection walks every object the collector tracks: right after start-up that is
LangChain's, LangGraph's and the runtime's ~190,000 objects, walked again by each full
collection (~85 ms here, a stall every run in flight feels as event-loop lag). Frozen
(``gc.freeze``), they are left out of every later collection; they live as long as the
process. And young objects are collected every ``YOUNG_THRESHOLD`` allocations instead
of Python's 700: an agent run allocates thousands, and each young collection walks them
all.

Measured (benchmarks/RESULTS.md, Admission under model latency): 1 s model, 400 clients,
adaptive limit, three runs each: lag p99 215-245 ms and 48-58 runs/s as Python leaves
it, 125-138 ms and 52-73 runs/s frozen, 109-124 ms and 61-75 runs/s frozen with young
collections every 2,000 allocations; a full collection at 64 runs in flight went from
144 ms to 22 ms.

Only the processes agentwatch owns do this (``serve``, ``worker``, ``batch``), once each:
an application embedding the runtime decides for itself (objects frozen while alive
that later become garbage in a reference cycle are never collected).
"""

from __future__ import annotations

import gc
from typing import Final

YOUNG_THRESHOLD: Final = 2000  # allocations between young collections (Python: 700)


def settle_heap() -> None:
    """Collect, freeze what is left (start-up's objects, kept for the process's life),
    and collect young objects less often."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
