"""What the builtin model answers: a pure, deterministic function of the request.

- the last message is a tool result (and no tool is required) → an answer that quotes
  the results;
- a tool to call (``selection.py``: the demo's calculator / search by keyword, a tool
  the prompt names, the one ``tool_choice`` requires) → calls to it, with arguments
  valid for its JSON schema, taken from the prompt where it can (``schema_values.py``);
- ``response_format`` json_schema / json_object → JSON valid for the schema (a JSON
  object with the keys the prompt quotes, for json_object);
- anything else → a direct answer.

Messages use the OpenAI wire shape (dicts with ``role``, ``content``, ``tool_calls``),
tools OpenAI's function tools (or, for the demo's, their names alone). The HTTP server
and the in-process ``BuiltinChatModel`` both use this module; the same request always
gets the same answer (``seed`` varies what is made up).

The work is bounded whatever the input (it runs on the service's event loop): the
brain reads the first ``SCAN_CHARS`` characters of the message it answers, counts
tokens exactly in the first ``COUNT_CHARS`` characters of the conversation (the rest
estimated at ``CHARS_PER_TOKEN``), quotes at most ``QUOTE_CHARS`` of a tool result, and
fills schemas within ``schema_values``' budget (``SchemaError`` beyond it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .facts import Facts
from .options import OfferedTool, OptionError, Options, parse_options
from .schema_values import Budget, SchemaError, value_for
from .selection import select_tools

SCAN_CHARS: Final = 32_000  # of the message answered (the service's max_input_chars)
COUNT_CHARS: Final = 64_000  # of the conversation, counted token by token
CHARS_PER_TOKEN: Final = 4  # the estimate beyond COUNT_CHARS
QUOTE_CHARS: Final = 4_000  # of each tool result quoted in an answer
_TOKEN = re.compile(r"\w+|[^\w\s]")
PIECE = re.compile(r"\s*\S+")  # how answers are streamed: one word with its leading space
DEMO_ANSWER: Final = (
    "I am the agentwatch builtin model. Ask me to calculate an expression "
    "(for example: what is 123 + 456) or to search the documentation "
    "(for example: search for exemplars)."
)
_TOOLS_LISTED: Final = 8  # tool names a direct answer lists


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
    cached_tokens: int = 0  # of prompt_tokens: reported only when a prompt_cache_key is given

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


def respond(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[str | Mapping[str, Any]] = (),
    *,
    tool_choice: Any = None,
    response_format: Any = None,
    parallel_tool_calls: Any = None,
    seed: Any = None,
    prompt_cache_key: Any = None,
) -> Reply:
    """The answer to a Chat Completions request (its fields as on the wire). A shape it
    cannot read, or a schema beyond the brain's budget, raises ``OptionError`` naming
    the parameter."""
    options = parse_options(
        tools, tool_choice, response_format, parallel_tool_calls, seed, prompt_cache_key
    )
    return with_usage(messages, _decide(messages, options), cached=options.cache_key is not None)


def with_usage(
    messages: Sequence[Mapping[str, Any]], reply: Reply, *, cached: bool = False
) -> Reply:
    """``reply`` with its token counts for this conversation; ``cached``: its earlier
    messages (all but the last) count as cached prompt tokens, as if a request with the
    same ``prompt_cache_key`` had sent them before."""
    completion = count_tokens(reply.content) + sum(
        count_tokens(c.name) + count_tokens(c.arguments) for c in reply.tool_calls
    )
    return dataclasses.replace(
        reply,
        prompt_tokens=_prompt_tokens(messages),
        completion_tokens=completion,
        cached_tokens=_prompt_tokens(messages[:-1]) if cached else 0,
    )


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


def _decide(messages: Sequence[Mapping[str, Any]], options: Options) -> Reply:
    if not messages:
        return Reply("There is nothing to answer.")
    budget = Budget()
    answering_tools = messages[-1].get("role") == "tool"
    facts = Facts.of(_asked(messages)[:SCAN_CHARS])
    if not answering_tools or options.choice == "required":
        calls = select_tools(options, facts)
        if calls:
            return Reply("", _calls(messages, calls, facts, options.seed, budget))
    if answering_tools:
        answer = _answer_from_tools(messages)
        facts = Facts.of(answer[:SCAN_CHARS])
    else:
        answer = _direct_answer(options)
    structured = _structured(messages, options, facts, budget)
    return Reply(structured if structured is not None else answer)


def _asked(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text the model answers: the last message, or after tool results the last
    message of the user (what a required tool call is filled from)."""
    last = messages[-1]
    if last.get("role") != "tool":
        return text_of(last.get("content"))
    for message in reversed(messages):
        if message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def _calls(
    messages: Sequence[Mapping[str, Any]],
    tools: list[tuple[OfferedTool, str]],
    facts: Facts,
    seed: int,
    budget: Budget,
) -> tuple[ToolCall, ...]:
    calls = []
    for number, (tool, text) in enumerate(tools):
        source = facts if text == facts.text else Facts.of(text)
        try:
            arguments = value_for(tool.parameters, source, seed, budget)
        except SchemaError as exc:
            raise OptionError(f"tool {tool.name!r}: {exc}.", "tools") from None
        if not isinstance(arguments, dict):
            raise OptionError(f"tool {tool.name!r}: its parameters must be an object.", "tools")
        payload = _json(arguments, "tools")
        key = f"{len(messages)}:{tool.name}:{payload}" + (f":{number}" if number else "")
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        calls.append(ToolCall(f"call_{digest}", tool.name, payload))
    return tuple(calls)


def _direct_answer(options: Options) -> str:
    names = [t.name for t in options.tools]
    if not names or {"calculator", "search"} & set(names):
        return DEMO_ANSWER
    listed = ", ".join(names[:_TOOLS_LISTED]) + (", ..." if len(names) > _TOOLS_LISTED else "")
    return f"I am the agentwatch builtin model. Name one of my tools to have me call it: {listed}."


def _structured(
    messages: Sequence[Mapping[str, Any]], options: Options, facts: Facts, budget: Budget
) -> str | None:
    """The answer as JSON, when ``response_format`` asks for it."""
    if options.format == "text":
        return None
    schema = options.schema
    if options.format == "json_object":  # the keys the prompt (or a system message) quotes
        keys = facts.identifiers() or _system_keys(messages) or ("answer",)
        schema = {
            "type": "object",
            "properties": {key: {"type": "string"} for key in keys},
            "required": list(keys),
        }
        facts = facts.without_quoted(keys)
    try:
        value = value_for(schema, facts, options.seed, budget)
    except SchemaError as exc:
        raise OptionError(f"response_format: {exc}.", "response_format") from None
    return _json(value, "response_format")


def _json(value: Any, param: str) -> str:
    try:  # a schema's const or enum is the caller's JSON: no NaN, no cycle in a dict given
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError) as exc:
        raise OptionError(f"{param}: the value is not JSON ({exc}).", param) from None


def _system_keys(messages: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    for message in messages:
        if message.get("role") in ("system", "developer"):
            keys = Facts.of(text_of(message.get("content"))[:SCAN_CHARS]).identifiers()
            if keys:
                return keys
    return ()


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
