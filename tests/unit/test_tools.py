"""The built-in tools: a calculator that refuses what is not arithmetic, a real BM25 search."""

from __future__ import annotations

import pytest

from agentwatch.runtime.tools import (
    BUNDLED_CORPUS,
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


@pytest.fixture(scope="module")
def index() -> SearchIndex:
    return SearchIndex.from_folder(BUNDLED_CORPUS)


def test_search_ranks_the_relevant_document_first(index: SearchIndex) -> None:
    (best, score), *_ = index.search("exemplars trace id slow bucket")
    assert best.title.startswith("Exemplars")
    assert score > 0
    assert index.search("retry after header jitter")[0][0].title.startswith("Retries")


def test_search_over_a_users_folder(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "kb.md").write_text("# Pager\n\nThe pager rotation starts on Monday.\n")
    (folder / "ignored.bin").write_bytes(b"\x00pager")
    user_index = SearchIndex.from_folder(folder)
    assert user_index.answer("pager rotation") == "Pager: The pager rotation starts on Monday."
    with pytest.raises(SearchError, match="does not exist"):
        SearchIndex.from_folder(folder / "missing")
