"""The garbage collector of a process that runs agents, set once its runtime has started.

A full collection walks every object the collector tracks: right after start-up that is
LangChain's, LangGraph's and the runtime's ~190,000 objects, walked again by each full
collection (~85 ms here, a stall every run in flight feels as event-loop lag). Frozen
(``gc.freeze``), they are left out of every later collection; they live as long as the
process.

And the generations are sized for runs in flight: each holds ~600 objects for seconds
(a model call's time), so nearly every young object survives its first collections,
and a middle collection walks every object made since the last one. Python collects a
generation once its count exceeds its threshold (counts are allocations less
deallocations of tracked objects): young every 1,001 (``YOUNG_THRESHOLD``), a middle
collection after 5 young ones (``MIDDLE_THRESHOLD`` 4), a full one after 201 middle ones
(``OLD_THRESHOLD`` 200) and only once the objects moved to the old generation since the
last are a quarter of those it kept. Before, young every 2,001 and middle after 11:
each middle collection walked ~22,000 objects, 16-32 ms, about 1.5 a second at 160
runs in flight on a 1 s model, and the loop lag's p99 was theirs. Now they walk ~5,000,
3-5 ms. A full collection walks every run in flight (0.4-0.8 s at 1,000 of them, 0.1-0.3
s at 160) and the runs' work waits behind it: after 51 middle ones (the first setting)
they came 13 times in 55 s at 1,000 runs in flight on a 5 s model, and the backlog each
left was the loop lag's p99. Runs that succeed leave no garbage in reference cycles
(none in 1,500 runs), so collecting the old generation less often mostly walks the runs
in flight less often. A failed run no longer leaves one either: its error's traceback
held frames that held the error, with the whole run (~430-1,200 objects), until a full
collection; the agent clears those frames (agents/frames.py; RESULTS.md section 11f).

Measured (benchmarks/RESULTS.md): section 11d, the old threshold at 50, 100 and 200 in
2 alternating rounds: at 5 s model latency, 1,000 clients and no limit, 200 gave 4 full
collections against 13, 0.28x the lag p99 and 0.70x the GC time at the same runs/s; at
1 s and 400 clients (a fixed 160) 0.68x the lag p99, 0.72x the GC time, runs/s within
the rounds' noise (0.96x; 1.06x with 300,000 long-lived objects beside the runs). The
young and middle thresholds against 2,000 / 10 (the run before, a fixed 160 at 1 s):
the same runs/s (1.02x) at 0.39x the lag p99. Earlier (section 11's runs then, adaptive
limit, three runs each): lag p99 215-245 ms and 48-58 runs/s as Python leaves it,
125-138 ms and 52-73 runs/s frozen; a full collection at 64 runs in flight went from
144 ms to 22 ms.

The thresholds are set, not merged with earlier ones (a process agentwatch owns has
set none). A heap of many long-lived objects made after start-up (not frozen) fills the
old generation's quarter sooner, objects being promoted sooner: a simulation with
1,000,000 of them found twice the full collections (with 50); with 300,000 kept results
beside the runs (section 11d) 3 in 32 s with 200, 6 with 50.

Only the processes agentwatch owns do this (``serve``, ``worker``, ``batch``), once each:
an application embedding the runtime decides for itself (objects frozen while alive
that later become garbage in a reference cycle are never collected).
"""

from __future__ import annotations

import gc
from typing import Final

YOUNG_THRESHOLD: Final = 1000  # allocations between young collections (Python: 700)
MIDDLE_THRESHOLD: Final = 4  # young collections between middle ones (Python: 10)
OLD_THRESHOLD: Final = 200  # middle collections between full ones, at least (Python: 10)


def settle_heap() -> None:
    """Collect, freeze what is left (start-up's objects, kept for the process's life),
    and size the generations for runs in flight."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
