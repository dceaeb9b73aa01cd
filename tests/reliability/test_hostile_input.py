"""Hostile tool input: refused or answered within bounds on time and memory, never run."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from agentwatch.runtime.tools import (
    BUNDLED_CORPUS,
    CalculatorError,
    SearchError,
    SearchIndex,
    evaluate,
)
from tests.helpers import time_bound

HOSTILE = [
    "__import__('os').system('echo pwned')",
    "().__class__.__bases__[0].__subclasses__()",
    "pi.__class__",
    "pi.real",
    "open('/etc/passwd').read()",
    "exec('1')",
    "eval('1+1')",
    "lambda: 1",
    "[x for x in range(10**9)]",
    "'a' * 10**9",
    "9**9**9",
    "10**10**10",
    "2**100000",
    "999999999999 ** 99999",
    "factorial(100000)",
    "1e308 * 10",
    "(" * 100 + "1" + ")" * 100,
    "1" * 300,
    "x" * 1_000_000,
    "１２３ + ４５６",  # fullwidth digits  # noqa: RUF001
    "1 + 2\u202e",
    "1\x00+2",
    "",
    "   ",
    "1/0",
    "(-8) ** 0.5",
    "10**999 * 10**999",
]


@pytest.mark.parametrize("expression", HOSTILE)
def test_hostile_expressions_are_refused_within_bounds(expression: str) -> None:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(CalculatorError) as refused:
            evaluate(expression)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < time_bound(strict=1.0, generous=10.0)  # nothing may run away
    assert peak < 16 * 1024 * 1024
    assert str(refused.value)  # a message the model (and the user) can read


@pytest.fixture(scope="module")
def index() -> SearchIndex:
    return SearchIndex.from_folder(BUNDLED_CORPUS)


@pytest.mark.parametrize("query", ["\x00\x01\xff" * 100, "zzzzqqqq", "?!"])
def test_search_junk_matches_nothing(index: SearchIndex, query: str) -> None:
    assert index.answer(query) == "No matching documents."


def test_search_refuses_empty_and_bounds_huge_queries(index: SearchIndex) -> None:
    with pytest.raises(SearchError, match="empty"):
        index.answer("   ")
    start = time.perf_counter()
    index.answer("histogram buckets " * 200_000)
    assert time.perf_counter() - start < time_bound(strict=1.0, generous=10.0)
