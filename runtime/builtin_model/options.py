"""The request options the brain reads, checked: ``tools``, ``tool_choice``,
``response_format``, ``parallel_tool_calls``, ``seed`` and ``prompt_cache_key``, in
OpenAI's wire shapes.

A shape the brain cannot read raises ``OptionError`` naming the parameter (the server
answers 400, as OpenAI does), never a ``TypeError`` deep in the brain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

MAX_NAME_CHARS: Final = 256  # a tool's name (and the model's name, ids: server.py)
_CHOICES: Final = ("auto", "none", "required")
# The demo's tools given by name alone (``respond(messages, ["calculator"])``) or without
# a schema: their arguments, as the runtime's own tools declare them.
_NAMED_ONLY: Final[Mapping[str, Mapping[str, Any]]] = {
    name: {
        "type": "object",
        "properties": {argument: {"type": "string"}},
        "required": [argument],
    }
    for name, argument in (("calculator", "expression"), ("search", "query"))
}
_NO_ARGUMENTS: Final[Mapping[str, Any]] = {"type": "object", "properties": {}}


class OptionError(ValueError):
    """A request option the brain cannot read: ``param`` names it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class OfferedTool:
    """A tool the caller offers: its name, description and parameters' JSON schema."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Options:
    tools: tuple[OfferedTool, ...] = ()
    choice: Literal["auto", "none", "required"] = "auto"
    forced: str | None = None  # the tool a named tool_choice requires
    format: Literal["text", "json_object", "json_schema"] = "text"
    schema: Any = None  # the json_schema format's schema
    parallel: bool = True
    seed: int = 0
    # ``prompt_cache_key`` given: the usage reports the conversation's earlier messages
    # as cached input tokens (as a provider's prompt cache would), so that cost and
    # token detail can be shown and tested offline.
    cache_key: str | None = None

    def tool(self, name: str) -> OfferedTool | None:
        return next((t for t in self.tools if t.name == name), None)


def parse_options(
    tools: Sequence[str | Mapping[str, Any]] | None = None,
    tool_choice: Any = None,
    response_format: Any = None,
    parallel_tool_calls: Any = None,
    seed: Any = None,
    prompt_cache_key: Any = None,
) -> Options:
    """``Options`` from the request's values (``OptionError`` for a shape it cannot read)."""
    offered = tuple(_tool(number, tool) for number, tool in enumerate(tools or ()))
    choice, forced = _choice(tool_choice)
    if choice != "auto" and choice != "none" and not offered:
        raise OptionError("'tool_choice' requires 'tools'.", "tool_choice")
    if forced is not None and all(t.name != forced for t in offered):
        raise OptionError(
            f"'tool_choice' names {forced!r}, which is not in 'tools'.", "tool_choice"
        )
    kind, schema = _format(response_format)
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise OptionError("'parallel_tool_calls' must be a boolean.", "parallel_tool_calls")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise OptionError("'seed' must be an integer.", "seed")
    if prompt_cache_key is not None:
        _name(prompt_cache_key, "prompt_cache_key")
    return Options(
        offered,
        choice,
        forced,
        kind,
        schema,
        parallel_tool_calls is not False,
        abs(seed or 0),
        prompt_cache_key,
    )


def _tool(number: int, tool: str | Mapping[str, Any]) -> OfferedTool:
    if isinstance(tool, str):
        return OfferedTool(
            _name(tool, f"tools[{number}]"), "", _NAMED_ONLY.get(tool, _NO_ARGUMENTS)
        )
    function = tool.get("function") if isinstance(tool, Mapping) else None
    if not isinstance(function, Mapping):
        raise OptionError(
            "each tool must be {'type': 'function', 'function': {'name': ...}}.", f"tools[{number}]"
        )
    where = f"tools[{number}].function"
    name = _name(function.get("name"), f"{where}.name")
    description = function.get("description") or ""
    if not isinstance(description, str):
        raise OptionError(f"{where}.description must be a string.", f"{where}.description")
    parameters = function.get("parameters")
    if not parameters and (parameters is None or isinstance(parameters, Mapping)):
        parameters = _NAMED_ONLY.get(name, _NO_ARGUMENTS)  # no schema: the demo's, or none
    if not isinstance(parameters, Mapping):
        raise OptionError(
            f"{where}.parameters must be a JSON schema object.", f"{where}.parameters"
        )
    return OfferedTool(name, description, parameters)


def _name(name: Any, param: str) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise OptionError(f"{param} must be a string of 1-{MAX_NAME_CHARS} characters.", param)
    return name


def _choice(value: Any) -> tuple[Literal["auto", "none", "required"], str | None]:
    if value is None or value == "auto":
        return "auto", None
    if value == "none":
        return "none", None
    if value == "required":
        return "required", None
    function = value.get("function") if isinstance(value, Mapping) else None
    if isinstance(function, Mapping) and value.get("type", "function") == "function":
        return "required", _name(function.get("name"), "tool_choice.function.name")
    raise OptionError(
        f"'tool_choice' must be one of {list(_CHOICES)} or "
        "{'type': 'function', 'function': {'name': ...}}.",
        "tool_choice",
    )


def _format(value: Any) -> tuple[Literal["text", "json_object", "json_schema"], Any]:
    kind = value.get("type") if isinstance(value, Mapping) else None
    if value is None or kind == "text":
        return "text", None
    if kind == "json_object":
        return "json_object", None
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema", {"type": "object"}) if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping | bool):
            raise OptionError(
                "'response_format.json_schema' must be {'name': ..., 'schema': {...}}.",
                "response_format.json_schema",
            )
        return "json_schema", schema
    raise OptionError(
        "'response_format' must be {'type': 'text' | 'json_object' | 'json_schema'}.",
        "response_format",
    )
