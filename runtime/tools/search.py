"""The ``search`` tool: BM25+ ranking (rank-bm25) over a folder of Markdown/text documents.

BM25+ rather than Okapi: Okapi's IDF goes negative for a term found in most documents
of a small corpus, so a one-document folder could never match. A passage is returned
only if it holds at least one query term.

The bundled corpus (``agentwatch/runtime/corpus``) documents observability topics;
``AGENTWATCH_CORPUS_DIR`` replaces it with a folder of the user's own documents. Each
paragraph is a passage, titled by its document's first heading. Queries are bounded:
an empty query is refused, a long one is cut, binary junk simply matches nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import BaseModel, Field
from rank_bm25 import BM25Plus

from agentwatch.telemetry import AgentwatchError

BUNDLED_CORPUS: Final = Path(__file__).resolve().parent.parent / "corpus"
MAX_QUERY_CHARS: Final = 1000
MAX_DOCUMENT_BYTES: Final = 2 * 1024 * 1024
SNIPPET_CHARS: Final = 280
_WORD = re.compile(r"[a-z0-9_]+")
_STOP_WORDS = (
    "a an and are as at be by can for from how i in is it me my of on or the to what when "
    "where which why with about does do"
)
_STOP = frozenset(_STOP_WORDS.split())


class SearchError(AgentwatchError, ValueError):
    """The query cannot be searched, or the corpus cannot be read."""


class SearchArgs(BaseModel):
    query: str = Field(description="What to look for in the documentation", max_length=100_000)


@dataclass(frozen=True, slots=True)
class Passage:
    title: str
    text: str


def tokenize(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


class SearchIndex:
    """An in-memory BM25 index over passages. Build it once (it reads files)."""

    def __init__(self, passages: Sequence[Passage]) -> None:
        if not passages:
            raise SearchError("the corpus has no passages to search")
        self.passages = list(passages)
        tokens = [tokenize(f"{p.title} {p.text}") for p in self.passages]
        self._terms = [frozenset(t) for t in tokens]
        self._bm25 = BM25Plus(tokens)

    @classmethod
    def from_folder(cls, folder: Path) -> SearchIndex:
        if not folder.is_dir():
            raise SearchError(f"corpus folder {folder} does not exist")
        passages: list[Passage] = []
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in {".md", ".txt"} or not path.is_file():
                continue
            if path.stat().st_size > MAX_DOCUMENT_BYTES:
                continue
            passages.extend(_passages(path))
        return cls(passages)

    def search(self, query: str, limit: int = 3) -> list[tuple[Passage, float]]:
        if not query.strip():
            raise SearchError("the query is empty")
        terms = tokenize(query[:MAX_QUERY_CHARS])
        if not terms:
            return []
        scores = self._bm25.get_scores(terms)
        ranked = sorted(range(len(scores)), key=lambda i: -scores[i])[: limit * 4]
        wanted = set(terms)
        hits = [(self.passages[i], float(scores[i])) for i in ranked if wanted & self._terms[i]]
        return hits[:limit]

    def answer(self, query: str) -> str:
        hits = self.search(query)
        if not hits:
            return "No matching documents."
        return " | ".join(f"{p.title}: {_snippet(p.text)}" for p, _ in hits)


def _passages(path: Path) -> list[Passage]:
    text = path.read_text(encoding="utf-8", errors="replace")
    title = path.stem
    out = []
    for block in re.split(r"\n\s*\n", text):
        block = block.strip()
        if not block:
            continue
        if block.startswith("#"):
            title = block.lstrip("#").strip().splitlines()[0]
            continue
        out.append(Passage(title, " ".join(block.split())))
    return out


def _snippet(text: str) -> str:
    if len(text) <= SNIPPET_CHARS:
        return text
    return text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " ..."
