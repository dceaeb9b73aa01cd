"""What the builtin model reads in a prompt: words, numbers, quoted text, places, its
subject and an arithmetic expression.

Every pattern runs in time linear in the text (the brain runs on the service's event
loop), on the bounded part of the message the brain reads (``brain.SCAN_CHARS``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cached_property
from typing import Final

MAX_FACTS: Final = 64  # numbers, quoted strings and places kept from one text
SUBJECT_CHARS: Final = 500  # of the subject used to fill a string
_NUMBER_DIGITS: Final = 18  # longer digit runs are not read as numbers

_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w)")
# Quoted text: the opening quote not inside a word ("What's" opens nothing), at most 200
# characters on one line, so each quote costs at most 200 steps.
_QUOTED = re.compile(
    r"(?<!\w)(?:'([^'\n]{1,200})'|\"([^\"\n]{1,200})\""
    r"|\u201c([^\u201d\n]{1,200})\u201d|\u2018([^\u2019\n]{1,200})\u2019"  # curly quotes
    r"|\u300c([^\u300d\n]{1,200})\u300d)(?!\w)"  # CJK corner brackets
)
# A place: capitalised words after a preposition ("weather in San Francisco, CA").
_PLACE = re.compile(
    r"\b(?:in|at|near|from|to|for)[ \t]+"
    r"([A-Z][\w'-]*(?:[ \t]+[A-Z][\w'-]*)*(?:,[ \t]*[A-Z][\w'-]*)?)"
)
_SENTENCE = re.compile(r"[^.?!\n]*")
_EXPLICIT_CALC = re.compile(r"\b(?:calculate|compute|evaluate)\s+(.+)", re.IGNORECASE | re.DOTALL)
# An arithmetic expression in free text is a number (digits, dots, spaces) followed by one
# or more "operator, optional signs and parentheses, number" steps. Found in linear time:
# each run of digits is scanned once (``_HEAD``, possessive), and the steps after it are
# matched once, with atomic groups (``_STEPS``). The single regex this replaces,
# r"[-+(]*\s*\d[\d.\s]*(?:(?:\*\*|[-+*/%^])\s*[-+(]*\s*[\d.]+[\s)]*)+" with search(),
# finds the same expressions but re-scanned the run from every digit in it: quadratic,
# 23 s of frozen event loop on "1 " * 15999.
_HEAD = re.compile(r"\d[\d.\s]*+")
_STEPS = re.compile(r"(?:(?:\*\*|[-+*/%^])(?>\s*)(?>[-+(]*)(?>\s*)[\d.]++[\s)]*+)++")
_LEAD = frozenset("-+(")
SEARCH = re.compile(
    r"\b(?:search(?:\s+for)?|find|look\s+up|lookup|docs?\s+(?:on|about|for))\b\s*(.*)",
    re.IGNORECASE | re.DOTALL,
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class Facts:
    """What one text says, each fact read when first asked for. ``subject`` is what a
    request to search is about, else the text's first sentence; ``search`` is the demo's
    search query (None when the text does not ask to search)."""

    def __init__(self, text: str, *, unquoted: frozenset[str] = frozenset()) -> None:
        self.text = text.strip()
        self._unquoted = unquoted

    @classmethod
    def of(cls, text: str) -> Facts:
        return cls(text)

    def without_quoted(self, texts: Iterable[str]) -> Facts:
        """The same facts, less the quoted ``texts`` (the keys a JSON object is asked for)."""
        return Facts(self.text, unquoted=self._unquoted | frozenset(texts))

    @cached_property
    def words(self) -> frozenset[str]:
        return frozenset(_WORD.findall(self.text.lower()))

    @cached_property
    def numbers(self) -> tuple[int | float, ...]:
        return _numbers(self.text)

    @cached_property
    def quoted(self) -> tuple[str, ...]:
        found = (next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(self.text))
        kept = (q.strip() for q in found)
        kept = (q for q in kept if q not in self._unquoted)
        return tuple(q for _, q in zip(range(MAX_FACTS), kept, strict=False))

    @cached_property
    def places(self) -> tuple[str, ...]:
        found = _PLACE.finditer(self.text)
        return tuple(m.group(1) for _, m in zip(range(MAX_FACTS), found, strict=False))

    @cached_property
    def search(self) -> str | None:
        match = SEARCH.search(self.text)
        return (match.group(1).strip(" ?.!") or self.text) if match else None

    @cached_property
    def subject(self) -> str:
        sentence = _SENTENCE.match(self.text)
        first = sentence.group(0).strip() if sentence else ""
        return _unquote((self.search or first or self.text)[:SUBJECT_CHARS])

    @cached_property
    def expression(self) -> str | None:
        """The arithmetic the text asks for: after "calculate" / "compute" / "evaluate",
        else the first arithmetic expression in it."""
        explicit = _EXPLICIT_CALC.search(self.text)
        if explicit:
            return explicit.group(1).strip().rstrip("?.!").strip() or None
        return arithmetic_in(self.text)

    def identifiers(self) -> tuple[str, ...]:
        """The quoted strings that are identifiers ('setup', 'punchline'): the keys a
        prompt asks a JSON object to have."""
        return tuple(dict.fromkeys(q for q in self.quoted if _IDENTIFIER.fullmatch(q)))


def _numbers(text: str) -> tuple[int | float, ...]:
    found: list[int | float] = []
    for match in _NUMBER.finditer(text):
        literal = match.group(0)
        if len(literal.lstrip("-").partition(".")[0]) > _NUMBER_DIGITS:
            continue
        found.append(float(literal) if "." in literal else int(literal))
        if len(found) == MAX_FACTS:
            break
    return tuple(found)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1].strip() or text
    return text


def arithmetic_in(text: str) -> str | None:
    """The first arithmetic expression in ``text``, in time linear in its length."""
    for head in _HEAD.finditer(text):  # each maximal run that starts with a digit, once
        steps = _STEPS.match(text, head.end())
        if steps is None:
            continue
        start = head.start()
        while start > 0 and text[start - 1].isspace():  # the signs and parentheses that
            start -= 1  # lead the number, e.g. "-(" in "-(3 + 4) * 2"
        while start > 0 and text[start - 1] in _LEAD:
            start -= 1
        return text[start : steps.end()].strip()
    return None
