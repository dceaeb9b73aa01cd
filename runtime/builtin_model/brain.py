"""What the builtin model answers: a pure, deterministic function of the conversation.

- the last message is a tool result → a final answer built from the results;
- "calculate X" / "compute X", or a message holding an arithmetic expression, with a
  ``calculator`` tool offered → a calculator call;
- a request to search / find / look up, with a ``search`` tool offered → a search call;
- anything else → a direct answer.

Messages use the OpenAI wire shape (dicts with ``role``, ``content``, ``tool_calls``).
The HTTP server and the in-process fake model of the benchmarks both use this module.

The work is bounded whatever the input (it runs on the service's event loop): the
brain reads the first ``SCAN_CHARS`` characters of the message it answers, counts
tokens exactly in the first ``COUNT_CHARS`` characters of the conversation (the rest
estimated at ``CHARS_PER_TOKEN``), and quotes at most ``QUOTE_CHARS`` of a tool result.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

SCAN_CHARS: Final = 32_000  # of the message answered (the service's max_input_chars)
COUNT_CHARS: Final = 64_000  # of the conversation, counted token by token
CHARS_PER_TOKEN: Final = 4  # the estimate beyond COUNT_CHARS
QUOTE_CHARS: Final = 4_000  # of each tool result quoted in an answer
_TOKEN = re.compile(r"\w+|[^\w\s]")
PIECE = re.compile(r"\s*\S+")  # how answers are streamed: one word with its leading space
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
_SEARCH = re.compile(
    r"\b(?:search(?:\s+for)?|find|look\s+up|lookup|docs?\s+(?:on|about|for))\b\s*(.*)",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as on the wire


@dataclass(frozen=True, slots=True)
class Reply:
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = field(default=0)

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


def count_tokens(text: str) -> int:
    """A stable token estimate: words and punctuation marks."""
    return len(_TOKEN.findall(text))


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def respond(messages: Sequence[Mapping[str, Any]], tools: Sequence[str]) -> Reply:
    prompt_tokens = _prompt_tokens(messages)
    reply = _decide(messages, set(tools))
    completion = count_tokens(reply.content) + sum(
        count_tokens(c.name) + count_tokens(c.arguments) for c in reply.tool_calls
    )
    return Reply(reply.content, reply.tool_calls, prompt_tokens, completion)


def _prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Tokens of the conversation: counted in its first COUNT_CHARS characters, estimated
    (CHARS_PER_TOKEN) beyond, so that a huge prompt costs no more than a large one."""
    budget = COUNT_CHARS
    tokens = 0
    for message in messages:
        text = text_of(message.get("content"))
        counted = text[:budget]
        budget -= len(counted)
        tokens += count_tokens(counted) + -(-(len(text) - len(counted)) // CHARS_PER_TOKEN)
    return tokens


def _decide(messages: Sequence[Mapping[str, Any]], tools: set[str]) -> Reply:
    if not messages:
        return Reply("There is nothing to answer.")
    last = messages[-1]
    if last.get("role") == "tool":
        return Reply(_answer_from_tools(messages))
    text = text_of(last.get("content"))[:SCAN_CHARS].strip()
    if "calculator" in tools:
        expression = _expression_in(text)
        if expression:
            return _call(messages, "calculator", {"expression": expression})
    if "search" in tools:
        match = _SEARCH.search(text)
        if match:
            query = match.group(1).strip(" ?.!") or text
            return _call(messages, "search", {"query": query})
    return Reply(
        "I am the agentwatch builtin model. Ask me to calculate an expression "
        "(for example: what is 123 + 456) or to search the documentation "
        "(for example: search for exemplars)."
    )


def _expression_in(text: str) -> str | None:
    explicit = _EXPLICIT_CALC.search(text)
    if explicit:
        return explicit.group(1).strip().rstrip("?.!").strip() or None
    return _arithmetic_in(text)


def _arithmetic_in(text: str) -> str | None:
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


def _call(messages: Sequence[Mapping[str, Any]], name: str, arguments: dict[str, str]) -> Reply:
    payload = json.dumps(arguments, ensure_ascii=False)
    digest = hashlib.sha256(f"{len(messages)}:{name}:{payload}".encode()).hexdigest()[:24]
    return Reply("", (ToolCall(f"call_{digest}", name, payload),))


def _quote(result: str) -> str:
    result = result.strip()
    if len(result) <= QUOTE_CHARS:
        return result
    return result[:QUOTE_CHARS].rstrip() + " ..."


def _answer_from_tools(messages: Sequence[Mapping[str, Any]]) -> str:
    results: list[tuple[str, str]] = []
    names: dict[str, str] = {}
    for message in messages:
        if message.get("role") == "assistant":
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                names[str(call.get("id"))] = str(function.get("name", "tool"))
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        tool = names.get(str(message.get("tool_call_id")), "tool")
        results.append((tool, _quote(text_of(message.get("content")))))
    parts = []
    for tool, result in reversed(results):
        if result.startswith("Error"):
            parts.append(f"I could not use the {tool} tool: {result}")
        elif tool == "calculator":
            parts.append(f"The answer is {result}.")
        elif tool == "search":
            parts.append(f"Here is what I found in the documentation: {result}")
        else:
            parts.append(f"The {tool} tool returned: {result}")
    return " ".join(parts)
