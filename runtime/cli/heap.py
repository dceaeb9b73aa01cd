"""The garbage collector of a process that runs agents, set once its runtime has started.

A full collection walks every object the collector tracks: right after start-up that is
LangChain's, LangGraph's and the runtime's ~190,000 objects, walked again by each full
collection (~85 ms here, a stall every run in flight feels as event-loop lag). Frozen
(``gc.freeze``), they are left out of every later collection; they live as long as the
process.

And the generations are sized for runs in flight: each holds ~600 objects for seconds
(a model call's time), so nearly every young object survives its first collections,
and what a middle collection walks is every object made since the last one. With
Python's 10 young collections per middle one, those walks took ~40 ms each (160 runs
in flight on a 1 s model, here), about one a second: the loop lag's p99 was theirs.
``MIDDLE_THRESHOLD`` (4) young collections of ``YOUNG_THRESHOLD`` (1,000) allocations
per middle one: 5-7 ms each. Full collections walk every run in flight (110-330 ms
here); ``OLD_THRESHOLD`` (50) middle collections per full one keeps them as rare as they were
(one every ~200,000 allocations at most, 3-6 in 35 s here).

Measured (benchmarks/RESULTS.md, Admission under model latency): 1 s model, 400 clients,
adaptive limit, three runs each: lag p99 215-245 ms and 48-58 runs/s as Python leaves
it, 125-138 ms and 52-73 runs/s frozen, 109-124 ms and 61-75 runs/s frozen with young
collections every 2,000 allocations; a full collection at 64 runs in flight went from
144 ms to 22 ms. Then a fixed limit of 160 on the same point, in one run, two rounds:
57.3 and 56.8 runs/s at 112 and 115 ms with Python's 10 and 10 (young every 2,000);
with the thresholds below, four rounds: 66.0-77.2 runs/s at 27-81 ms (the machine's
speed drifts between minutes).

Only the processes agentwatch owns do this (``serve``, ``worker``, ``batch``), once each:
an application embedding the runtime decides for itself (objects frozen while alive
that later become garbage in a reference cycle are never collected).
"""

from __future__ import annotations

import gc
from typing import Final

YOUNG_THRESHOLD: Final = 1000  # allocations between young collections (Python: 700)
MIDDLE_THRESHOLD: Final = 4  # young collections between middle ones (Python: 10)
OLD_THRESHOLD: Final = 50  # middle collections between full ones, at least (Python: 10)


def settle_heap() -> None:
    """Collect, freeze what is left (start-up's objects, kept for the process's life),
    and size the generations for runs in flight."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
