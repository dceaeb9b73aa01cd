"""heap.py: the heap of a process agentwatch owns, settled once its runtime started
(in a process of its own: freezing this one would keep the suite's garbage)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc
import weakref
from agentwatch.runtime.cli import heap
from agentwatch.runtime.cli.heap import settle_heap
kept = [[object()] for _ in range(1000)]
class Node:
    pass
cycle = Node()
cycle.self = cycle
gone = weakref.ref(cycle)
del cycle  # garbage in a cycle: collected first, not frozen for ever
assert gc.get_freeze_count() == 0
settle_heap()
assert gc.get_freeze_count() > len(kept), gc.get_freeze_count()
assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, heap.MIDDLE_THRESHOLD, heap.OLD_THRESHOLD)
assert gone() is None
print("ok", gc.get_freeze_count())
"""


def test_start_ups_objects_are_frozen_and_the_generations_sized_for_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


PRICES = """
import gc
from langchain_openai import ChatOpenAI
from agentwatch.runtime import Agent
from agentwatch.runtime.cli.heap import settle_heap
from agentwatch.telemetry import Telemetry
telemetry = Telemetry()
# a model the table does not know: the table is loaded all the same
Agent(ChatOpenAI(model="not-a-known-model", api_key="k", base_url="http://127.0.0.1:9/v1"),
      [], telemetry=telemetry)
settle_heap()
before = len(gc.get_objects())
assert telemetry.prices.price("openai", "gpt-4o") is not None  # a model the table knows
added = len(gc.get_objects()) - before
assert added < 1000, added
print("ok", added)
"""


def test_the_price_table_is_loaded_before_the_heap_is_settled() -> None:
    """An agent preloads the price table when made, whatever its model: the bundled
    table (~16,000 objects) is frozen with start-up's objects, not left for every full
    collection to walk from the first priced call on."""
    done = subprocess.run(
        [sys.executable, "-c", PRICES], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")
