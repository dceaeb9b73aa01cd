"""Which of the offered tools the builtin model calls, from the prompt and ``tool_choice``.

- ``tool_choice`` "none": no tool; a named tool: that one, whatever the prompt;
- the demo's tools, by keyword as always: ``calculator`` when the prompt holds arithmetic
  (or asks to calculate), else ``search`` when it asks to search / find / look up;
- else every tool the prompt names, in the order it names them: by its whole name
  (``get_weather``), or by a word of its name that is not a generic verb ("weather"),
  or "the tool" when a single tool is offered; each filled from the part of the prompt
  that names it ("magic_function with 7, then get_weather for Lyon");
- "required" with none of these: the first tool offered;
- ``parallel_tool_calls`` false: the first of them only.
"""

from __future__ import annotations

import re
from typing import Final

from .facts import Facts
from .options import OfferedTool, Options
from .schema_values import hint_words

MAX_CALLS: Final = 16  # tool calls in one answer
# Words of a tool's name too generic to name it ("get" of get_weather).
_GENERIC: Final = frozenset(
    {"get", "set", "fetch", "make", "create", "do", "run", "call", "use", "tool", "tools"}
    | {"function", "func", "fn", "api", "the", "a", "an", "my", "to", "of", "by", "for"}
    | {"and", "with", "from", "in", "on", "no", "args", "arg", "info", "data", "list", "new"}
)
_WORD_CHAR = re.compile(r"\w")
_LOOKS: Final = 64  # occurrences of a name looked at


def select_tools(options: Options, facts: Facts) -> list[tuple[OfferedTool, str]]:
    """The tools to call, each with the text its arguments come from: the whole prompt,
    or when the prompt names several tools, the part from one's name to the next's."""
    if options.choice == "none" or not options.tools:
        return []
    if options.forced is not None:
        forced = options.tool(options.forced)
        return [(forced, facts.text)] if forced is not None else []
    demo = _demo(options, facts)
    if demo is not None:
        return [(demo, facts.text)]
    named = _named(options.tools, facts)[: MAX_CALLS if options.parallel else 1]
    if len(named) == 1:
        return [(named[0][1], facts.text)]
    if named:
        ends = [*(start for start, _ in named[1:]), len(facts.text)]
        starts = [0, *ends[:-1]]
        return [
            (tool, facts.text[a:b]) for (_, tool), a, b in zip(named, starts, ends, strict=True)
        ]
    if options.choice == "required":
        return [(options.tools[0], facts.text)]
    return []


def _demo(options: Options, facts: Facts) -> OfferedTool | None:
    calculator, search = options.tool("calculator"), options.tool("search")
    if calculator is not None and facts.expression:
        return calculator
    if search is not None and facts.search is not None:
        return search
    return None


def _named(tools: tuple[OfferedTool, ...], facts: Facts) -> list[tuple[int, OfferedTool]]:
    """The tools the prompt names, with where it first names each, in that order."""
    lower = facts.text.lower()
    found: list[tuple[int, int, OfferedTool]] = []
    for number, tool in enumerate(tools):
        where = _mention(tool.name.lower(), lower, facts.words)
        if where is not None:
            found.append((where, number, tool))
    if not found and len(tools) == 1 and "tool" in facts.words:
        return [(0, tools[0])]  # "Use the tool."
    return [(where, tool) for where, _, tool in sorted(found)]


def _mention(name: str, text: str, words: frozenset[str]) -> int | None:
    """Where ``text`` first names the tool ``name`` (None: nowhere)."""
    whole = _find_word(text, name)
    if whole is not None:
        return whole
    for word in hint_words(name):
        if len(word) < 3 or word in _GENERIC:
            continue
        for form in (word, word + "s"):
            if form in words:
                return _find_word(text, form) or 0
    return None


def _find_word(text: str, word: str) -> int | None:
    """The first ``word`` in ``text`` that is not part of a longer word (the first
    ``_LOOKS`` occurrences are looked at: a bounded scan whatever the text)."""
    start = text.find(word)
    for _ in range(_LOOKS):
        if start < 0:
            return None
        end = start + len(word)
        if not _WORD_CHAR.match(text[start - 1 : start]) and not _WORD_CHAR.match(
            text[end : end + 1]
        ):
            return start
        start = text.find(word, end)
    return None
