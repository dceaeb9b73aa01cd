"""A value that satisfies a JSON schema, taken from the prompt where it can be.

``value_for(schema, facts)`` fills a tool's arguments and a structured answer: a
property named like a place gets a place named in the prompt ("Paris"), a name gets
quoted text, an expression the prompt's arithmetic, a query the prompt's subject, a
number the prompt's next number that fits; what the prompt does not give is made up,
the smallest value the schema allows, varied by ``seed``. It reads ``type`` (and lists of
types), ``const``, ``enum``, ``$ref`` (``#`` and ``#/...`` pointers, ``$defs``),
``allOf`` / ``anyOf`` / ``oneOf``, ``properties`` / ``required`` / ``additionalProperties``
/ ``minProperties``, ``items`` / ``prefixItems`` / ``minItems`` / ``maxItems`` /
``uniqueItems``, ``minLength`` / ``maxLength`` / ``format``, ``minimum`` / ``maximum`` /
``exclusiveMinimum`` / ``exclusiveMaximum`` / ``multipleOf``. It ignores ``pattern`` (it
never runs a caller's regex) and ``not``.

A schema comes from the caller, and the brain runs on the service's event loop, so the
work is bounded whatever the schema (one ``Budget`` for all the values of an answer):
at most ``MAX_STEPS`` schema nodes visited (a fan-out of references ends there),
``MAX_DEPTH`` levels (a self-referencing ``$ref`` ends there), a ``minLength`` of at most
``MAX_STRING_CHARS`` and ``MAX_TOTAL_CHARS`` characters in all (text from the prompt is
cut to fit), a ``minItems`` of at most ``MAX_ARRAY_ITEMS``. A schema beyond them, or one
no value satisfies, raises ``SchemaError``: the server answers 400.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any, Final

from .facts import Facts

MAX_STEPS: Final = 4_000  # schema nodes visited (and items made) for one answer
MAX_DEPTH: Final = 32  # schemas inside one another, references included
MAX_STRING_CHARS: Final = 10_000  # a string's minLength beyond this is refused
MAX_TOTAL_CHARS: Final = 100_000  # characters of all strings in one answer
MAX_ARRAY_ITEMS: Final = 1_000  # an array's minItems beyond this is refused
_ENUM_SCAN: Final = 256  # enum values looked for in the prompt

_PLACE_HINTS: Final = frozenset(
    {"city", "location", "place", "country", "region", "town", "address", "destination"}
    | {"origin", "where", "state", "area", "locality", "venue"}
)
_EXPRESSION_HINTS: Final = frozenset({"expression", "expr", "formula", "equation", "calculation"})
_QUERY_HINTS: Final = frozenset(
    {"query", "q", "question", "search", "keywords", "keyword", "topic", "terms", "term"}
    | {"prompt", "text", "input", "message", "subject", "request"}
)
_FORMATS: Final = {
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "iri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "hostname": "example.com",
    "duration": "P1D",
}
_HINT_SPLIT = re.compile(r"[_\-\s.]+|(?<=[a-z0-9])(?=[A-Z])")
_TYPES: Final = ("object", "array", "string", "integer", "number", "boolean", "null")


class SchemaError(ValueError):
    """A schema the builtin model does not fill: too large, too deep, or unsatisfiable."""


class _OverBudget(SchemaError):
    """The budget is spent: no other option is tried."""


class Budget:
    """The work left for one answer's values (all its tool calls share one budget)."""

    def __init__(self, steps: int = MAX_STEPS, chars: int = MAX_TOTAL_CHARS) -> None:
        self.steps = steps
        self.chars = chars

    def spend(self, steps: int = 1, chars: int = 0) -> None:
        self.steps -= steps
        self.chars -= chars
        if self.steps < 0:
            raise _OverBudget(f"the schema needs more than {MAX_STEPS} steps to fill")
        if self.chars < 0:
            raise _OverBudget(f"the answer would hold more than {MAX_TOTAL_CHARS} characters")


def value_for(schema: Any, facts: Facts, seed: int = 0, budget: Budget | None = None) -> Any:
    """A value valid for ``schema``, from ``facts`` where they fit (``SchemaError``)."""
    try:
        return _Maker(schema, facts, seed, budget or Budget()).make(schema, 0, "")
    except SchemaError:
        raise
    except (ArithmeticError, ValueError):  # bounds at the edge of what floats hold
        raise SchemaError("no number satisfies the schema's bounds") from None


def hint_words(name: str) -> tuple[str, ...]:
    """The words of an identifier: ``customerName`` and ``customer_name`` -> customer, name."""
    return tuple(w.lower() for w in _HINT_SPLIT.split(name) if w)


class _Maker:
    def __init__(self, root: Any, facts: Facts, seed: int, budget: Budget) -> None:
        self.root = root
        self.facts = facts
        self.seed = seed
        self.budget = budget
        self.spend = budget.spend
        self.refs: dict[str, Any] = {}
        self.enums: dict[int, list[Any]] = {}  # the values of each enum (by the list's id)
        self.numbers = 0  # prompt numbers used so far
        self.quoted = 0  # prompt quoted strings used so far
        self.places = 0

    def make(self, schema: Any, depth: int, hint: str, variant: int = 0) -> Any:
        self.spend()
        if depth > MAX_DEPTH:
            raise SchemaError(f"the schema is nested more than {MAX_DEPTH} deep")
        if schema is True:
            schema = {}
        if schema is False:
            raise SchemaError("a 'false' schema has no valid value")
        if not isinstance(schema, Mapping):
            raise SchemaError("a schema must be an object or a boolean")
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return self._enum(enum, schema.get("type"), variant)
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return self.make(self._resolve(ref), depth + 1, hint, variant)
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            return self.make(self._merged(schema, all_of, depth), depth + 1, hint, variant)
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return self._first_option(options, depth, hint, variant)
        kind = _kind(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth, hint)
        if kind in ("integer", "number"):
            return self._number(schema, integer=kind == "integer", variant=variant)
        if kind == "boolean":
            return (self.seed + variant) % 2 == 1
        if kind == "null":
            return None
        return self._string(schema, hint, variant)

    # -- composition -------------------------------------------------------------------

    def _resolve(self, ref: str) -> Any:
        if ref in self.refs:
            return self.refs[ref]
        if ref != "#" and not ref.startswith("#/"):
            raise SchemaError(f"only local references (#/...) are followed: {ref[:64]!r}")
        node = self.root
        parts = ref[2:].split("/") if ref != "#" else []
        self.spend(len(parts))
        for part in parts:
            key = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise SchemaError(f"the reference {ref[:64]!r} does not resolve")
        self.refs[ref] = node
        return node

    def _merged(self, schema: Mapping[str, Any], parts: list[Any], depth: int) -> dict[str, Any]:
        """``allOf``: the parts' keywords in one schema (properties and required joined)."""
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        properties = dict(_mapping(merged.get("properties")))
        required = list(_strings(merged.get("required")))
        for part in parts:
            for _ in range(MAX_DEPTH):  # a part that is a reference: follow it (bounded)
                if not (isinstance(part, Mapping) and isinstance(part.get("$ref"), str)):
                    break
                part = self._resolve(part["$ref"])
            if not isinstance(part, Mapping):
                continue
            self.spend(1 + len(part) + _scanned(part))
            properties.update(_mapping(part.get("properties")))
            required += _strings(part.get("required"))
            for key, value in part.items():
                merged.setdefault(key, value)
        if properties:
            merged["properties"] = properties
        if required:
            merged["required"] = required
        return merged

    def _first_option(self, options: list[Any], depth: int, hint: str, variant: int) -> Any:
        """``anyOf`` / ``oneOf``: a value of the first option that has one, null last (a
        nullable field gets a value)."""
        self.spend(len(options))
        null = [isinstance(o, Mapping) and o.get("type") == "null" for o in options]
        failure = SchemaError("no option of anyOf / oneOf has a value")
        for option, _ in sorted(zip(options, null, strict=True), key=lambda pair: pair[1]):
            try:
                return self.make(option, depth + 1, hint, variant)
            except _OverBudget:
                raise
            except SchemaError as exc:
                failure = exc
        raise failure

    def _enum(self, values: list[Any], declared: Any, variant: int) -> Any:
        """The value the prompt names, else one chosen by the seed (of the right type)."""
        allowed = self.enums.get(id(values))
        if allowed is None:  # read once per enum, however often it is visited
            self.spend(min(len(values), _ENUM_SCAN) // 16)
            allowed = [v for v in values[:_ENUM_SCAN] if _of_type(v, declared)]
            self.enums[id(values)] = allowed
        if not allowed:
            raise SchemaError("no value of the enum has the schema's type")
        for value in allowed:
            if isinstance(value, str) and value and value.lower() in self.facts.words:
                return value
        return allowed[(self.seed + variant) % len(allowed)]

    # -- containers --------------------------------------------------------------------

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        self.spend(_scanned(schema))
        properties = _mapping(schema.get("properties"))
        extra = schema.get("additionalProperties", True)
        if "required" in schema:
            keys = list(dict.fromkeys(_strings(schema.get("required"))))
        else:  # nothing said required: fill what is described
            keys = list(properties)
        wanted = _at_least(schema.get("minProperties"))
        if wanted > len(keys):  # minProperties: described properties first
            chosen = set(keys)
            keys += [k for k in properties if k not in chosen][: wanted - len(keys)]
        out: dict[str, Any] = {}
        for key in keys:
            out[key] = self.make(properties.get(key, _schema_or_any(extra)), depth + 1, key)
        number = 0
        while len(out) < wanted:
            if extra is False:
                raise SchemaError("minProperties asks for more properties than are allowed")
            number += 1
            out.setdefault(f"property{number}", self.make(_schema_or_any(extra), depth + 1, ""))
        return out

    def _array(self, schema: Mapping[str, Any], depth: int, hint: str) -> list[Any]:
        items = schema.get("items", {})
        prefix = schema.get("prefixItems")
        if isinstance(items, list):  # draft 4's tuple form
            prefix, items = items, schema.get("additionalItems", {})
        prefix = prefix if isinstance(prefix, list) else []
        least, most = _size(schema, "minItems", "maxItems", MAX_ARRAY_ITEMS)
        size = max(least, min(len(prefix), MAX_ARRAY_ITEMS), 0 if items is False else 1)
        if most is not None:
            size = min(size, most)
        if _numeric(items) and not prefix:  # numbers listed in the prompt fill the array
            left = len(self.facts.numbers) - self.numbers
            size = max(size, min(left, most if most is not None else left))
        out: list[Any] = []
        seen: set[str] = set()
        unique = schema.get("uniqueItems") is True
        for index in range(size):
            item_schema = prefix[index] if index < len(prefix) else items
            if item_schema is False:
                raise SchemaError("the array needs more items than its schema allows")
            value = self.make(item_schema, depth + 1, hint, variant=index)
            if unique:
                key = json.dumps(value, sort_keys=True, default=str)
                if key in seen:
                    raise SchemaError("uniqueItems: the items' schema allows too few values")
                seen.add(key)
            out.append(value)
        return out

    # -- scalars -----------------------------------------------------------------------

    def _string(self, schema: Mapping[str, Any], hint: str, variant: int) -> str:
        least, most = _size(schema, "minLength", "maxLength", MAX_STRING_CHARS)
        text = _format(schema.get("format"), self.seed + variant)
        if text is None:
            text = self._from_prompt(hint) if variant == 0 else None
            if text is None:
                text = _made_up(self.seed + variant)
        room = self.budget.chars  # text from the prompt is cut to the room left
        if least > room:
            raise SchemaError(f"the answer would hold more than {MAX_TOTAL_CHARS} characters")
        text = text[: min(room, most if most is not None else room)]
        if len(text) < least:
            text += "x" * (least - len(text))
        self.spend(0, len(text))
        return text

    def _from_prompt(self, hint: str) -> str | None:
        facts = self.facts
        words = set(hint_words(hint))
        if words & _EXPRESSION_HINTS:
            return facts.expression or facts.subject or None
        if words & _QUERY_HINTS:
            return (facts.search if facts.search is not None else facts.subject) or None
        if words & _PLACE_HINTS and self.places < len(facts.places):
            self.places += 1
            return facts.places[self.places - 1]
        if self.quoted < len(facts.quoted):  # a name, a title, ...: the next quoted text
            self.quoted += 1
            return facts.quoted[self.quoted - 1]
        return facts.subject or None

    def _number(self, schema: Mapping[str, Any], *, integer: bool, variant: int) -> int | float:
        low, high = _bounds(schema, integer)
        step = _real_or_none(schema.get("multipleOf"))
        step = step if step is not None and step > 0 else None
        while self.numbers < len(self.facts.numbers):  # the prompt's next number that fits
            found = self.facts.numbers[self.numbers]
            self.numbers += 1
            if _fits(found, low, high, step, integer):
                return int(found) if integer else found
        value: float = self.seed + variant
        if low is not None and value < low:
            value = math.ceil(low)
        if high is not None and value > high:
            value = math.floor(high)
        if low is not None and high is not None and value < low:
            value = low / 2 + high / 2  # no whole number between the bounds: the middle
        if step is not None:
            count = math.ceil(low / step) if low is not None else math.floor(value / step)
            value = count * step
        if not _fits(value, low, high, step, integer):
            raise SchemaError("no number satisfies the schema's bounds")
        return int(value) if integer or float(value).is_integer() else value


def _kind(schema: Mapping[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        known = [t for t in declared[: len(_TYPES)] if t in _TYPES]
        declared = next((t for t in known if t != "null"), known[0] if known else None)
    if declared in _TYPES:
        return str(declared)
    if any(k in schema for k in ("properties", "required", "additionalProperties")):
        return "object"
    if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "string"


def _of_type(value: Any, declared: Any) -> bool:
    """Whether ``value`` has the JSON type ``declared`` (a name or a list; none: any)."""
    if isinstance(declared, list):
        return any(_of_type(value, one) for one in declared[:8])
    check = _TYPE_CHECKS.get(declared) if isinstance(declared, str) else None
    return check(value) if check is not None else True


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


_TYPE_CHECKS: Final[Mapping[str, Callable[[Any], bool]]] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": lambda v: _real_or_none(v) is not None,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list),
}


def _scanned(schema: Mapping[str, Any]) -> int:
    """The steps reading an object schema's ``properties`` and ``required`` costs (each
    entry one step: a long list visited through many references is not free)."""
    required = schema.get("required")
    return len(_mapping(schema.get("properties"))) + (
        len(required) if isinstance(required, list) else 0
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _size(schema: Mapping[str, Any], low: str, high: str, cap: int) -> tuple[int, int | None]:
    """A size's bounds (``minItems`` / ``maxItems``, ...): the least at most ``cap``."""
    least, most = _at_least(schema.get(low)), _at_most(schema.get(high))
    if least > cap:
        raise SchemaError(f"{low} above {cap}")
    if most is not None and most < least:
        raise SchemaError(f"{low} is above {high}")
    return least, most


def _at_least(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _at_most(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _real_or_none(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _schema_or_any(extra: Any) -> Any:
    return extra if isinstance(extra, Mapping) else {}


def _numeric(schema: Any) -> bool:
    return isinstance(schema, Mapping) and schema.get("type") in ("integer", "number")


def _bounds(schema: Mapping[str, Any], integer: bool) -> tuple[float | None, float | None]:
    """The inclusive bounds (draft 4's boolean exclusive flags and draft 6's numbers)."""
    low = _real_or_none(schema.get("minimum"))
    high = _real_or_none(schema.get("maximum"))
    above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if above is True:
        above, low = low, None
    if below is True:
        below, high = high, None
    strictly_above, strictly_below = _real_or_none(above), _real_or_none(below)
    if strictly_above is not None:
        nearest = (
            math.floor(strictly_above) + 1 if integer else math.nextafter(strictly_above, math.inf)
        )
        low = nearest if low is None else max(low, nearest)
    if strictly_below is not None:
        nearest = (
            math.ceil(strictly_below) - 1 if integer else math.nextafter(strictly_below, -math.inf)
        )
        high = nearest if high is None else min(high, nearest)
    if integer:
        low = math.ceil(low) if low is not None else None
        high = math.floor(high) if high is not None else None
    return low, high


def _fits(
    value: float, low: float | None, high: float | None, step: float | None, integer: bool
) -> bool:
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        return False
    if (low is not None and value < low) or (high is not None and value > high):
        return False
    return step is None or math.isclose(value / step, round(value / step), abs_tol=1e-9)


def _format(name: Any, seed: int) -> str | None:
    if name == "date":
        return (date(2024, 1, 1) + timedelta(days=seed % 3650)).isoformat()
    return _FORMATS.get(name) if isinstance(name, str) else None


def _made_up(seed: int) -> str:
    """A short made-up string: "a", "b", ... "z", "ba", ... (varied by the seed)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    number = max(0, seed)
    text = letters[number % 26]
    number //= 26
    while number:
        text = letters[number % 26] + text
        number //= 26
    return text
