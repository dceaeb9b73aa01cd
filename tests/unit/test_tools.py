"""The built-in tools: a calculator that refuses what is not arithmetic, a real BM25 search."""

from __future__ import annotations

import time

import pytest

from agentwatch.runtime.tools import (
    BUNDLED_CORPUS,
    CalculatorError,
    SearchError,
    SearchIndex,
    evaluate,
)


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("123 + 456", "579"),
        ("2 ^ 10", "1024"),
        ("(1 + 2) * 3 - 4 / 2", "7"),
        ("7 // 2 + 7 % 2", "4"),
        ("sqrt(16) + abs(-2)", "6"),
        ("2 ** 0.5", "1.41421356237"),
        ("10 ** 999", "1" + "0" * 999),
        ("-3 * -3", "9"),
    ],
)
def test_arithmetic(expression: str, value: str) -> None:
    assert evaluate(expression) == value


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
def test_hostile_expressions_are_refused_quickly(expression: str) -> None:
    start = time.perf_counter()
    with pytest.raises(CalculatorError) as refused:
        evaluate(expression)
    assert time.perf_counter() - start < 1.0  # a bound, not a benchmark: nothing may run away
    assert str(refused.value)  # a message the model (and the user) can read


@pytest.fixture(scope="module")
def index() -> SearchIndex:
    return SearchIndex.from_folder(BUNDLED_CORPUS)


def test_search_ranks_the_relevant_document_first(index: SearchIndex) -> None:
    (best, score), *_ = index.search("exemplars trace id slow bucket")
    assert best.title.startswith("Exemplars")
    assert score > 0
    assert index.search("retry after header jitter")[0][0].title.startswith("Retries")


@pytest.mark.parametrize("query", ["\x00\x01\xff" * 100, "zzzzqqqq", "?!"])
def test_search_junk_matches_nothing(index: SearchIndex, query: str) -> None:
    assert index.answer(query) == "No matching documents."


def test_search_refuses_empty_and_bounds_huge_queries(index: SearchIndex) -> None:
    with pytest.raises(SearchError, match="empty"):
        index.answer("   ")
    start = time.perf_counter()
    index.answer("histogram buckets " * 200_000)
    assert time.perf_counter() - start < 1.0


def test_search_over_a_users_folder(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "kb.md").write_text("# Pager\n\nThe pager rotation starts on Monday.\n")
    (folder / "ignored.bin").write_bytes(b"\x00pager")
    user_index = SearchIndex.from_folder(folder)
    assert user_index.answer("pager rotation") == "Pager: The pager rotation starts on Monday."
    with pytest.raises(SearchError, match="does not exist"):
        SearchIndex.from_folder(folder / "missing")
