"""Hostile schemas against the builtin model (issue 16): it fills any tool's schema and
any ``response_format`` schema on the service's event loop, so a schema that refers to
itself, fans out, or asks for huge values is refused (400, OpenAI's shape, naming the
parameter) within a bounded budget, never a hang, a memory blow-up or a 500."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwatch.runtime.builtin_model.facts import Facts
from agentwatch.runtime.builtin_model.schema_values import (
    MAX_STEPS,
    MAX_TOTAL_CHARS,
    SchemaError,
    value_for,
)
from agentwatch.runtime.builtin_model.server import INLINE_BYTES
from tests.helpers import cli_process, probed, rss_kib, time_bound, wait_until_ready

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}
PROMPT = "Use get_weather for Paris, 3 times, 'quoted'. " * 150  # 7 KB, the brain scans it


def _fan_out(width: int, levels: int) -> dict[str, Any]:
    """Each level's object refers ``width`` times to the next: width ** levels values."""
    defs = {
        f"l{level}": {
            "type": "object",
            "properties": {f"p{i}": {"$ref": f"#/$defs/l{level + 1}"} for i in range(width)},
        }
        for level in range(levels)
    }
    defs[f"l{levels}"] = {"type": "string", "minLength": 100}
    return {"$defs": defs, "$ref": "#/$defs/l0"}


def _visited_1000_times(definition: dict[str, Any]) -> dict[str, Any]:
    """An array of 1,000 references to one definition: each visit reads it again."""
    return {
        "$defs": {"X": definition},
        "type": "array",
        "minItems": 1000,
        "items": {"$ref": "#/$defs/X"},
    }


HOSTILE: dict[str, Any] = {
    "refers-to-itself": {"$ref": "#"},
    "itself-through-allOf": {"allOf": [{"allOf": [{"$ref": "#"}]}]},
    "fan-out-30**4": _fan_out(30, 4),
    "min-length-10**18": {"type": "string", "minLength": 10**18},
    "min-items-10**18": {"type": "array", "minItems": 10**18},
    "arrays-of-arrays": {
        "type": "array",
        "minItems": 1000,
        "items": {"type": "array", "minItems": 1000, "items": {"type": "string", "minLength": 1}},
    },
    "many-long-strings": {
        "type": "object",
        "required": [f"k{i}" for i in range(500)],
        "properties": {f"k{i}": {"type": "string", "minLength": 9000} for i in range(500)},
    },
    "bounds-at-the-edge": {"type": "number", "exclusiveMinimum": 1.7976931348623157e308},
    "tiny-multiple": {"type": "number", "minimum": 1e300, "multipleOf": 1e-300},
    # long lists read on every visit: the reading is counted, not only the values made
    "required-5000-visited-1000x": _visited_1000_times(
        {"type": "object", "required": ["a"] * 5000}
    ),
    "allOf-1000-properties-1000x": {
        "$defs": {"X": {"properties": {f"p{i}": {} for i in range(1000)}, "required": []}},
        "type": "object",
        "properties": {f"q{i}": {"allOf": [{"$ref": "#/$defs/X"}]} for i in range(1000)},
    },
    "anyOf-2000-visited-1000x": _visited_1000_times({"anyOf": [{"type": "null"}] * 2000}),
    "external-ref": {"$ref": "https://example.com/schema.json"},
    "dangling-ref": {"$ref": "#/$defs/nope"},
    "false": False,
}


def _requests(name: str, schema: Any) -> list[tuple[str, dict[str, Any]]]:
    """The schema as a response_format and as a tool's parameters."""
    messages = [{"role": "user", "content": PROMPT}]
    parameters = (
        schema
        if isinstance(schema, dict)
        else {"type": "object", "properties": {"x": schema}, "required": ["x"]}
    )
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": parameters}}
    return [
        (
            "response_format",
            {
                "model": "m",
                "messages": messages,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": schema},
                },
            },
        ),
        ("tools", {"model": "m", "messages": messages, "tools": [tool]}),
    ]


async def test_hostile_schemas_are_refused_within_a_bounded_budget() -> None:
    """Every hostile schema, as a response format and as a tool's parameters, all at once
    and then one by one, against `agentwatch model`: each a 400 naming its parameter,
    /healthz answering meanwhile, the model's memory bounded."""
    cases = [  # encoded beforehand: the probe measures the model, not this client
        (name, param, json.dumps(body).encode())
        for name, schema in HOSTILE.items()
        for param, body in _requests(name, schema)
    ]
    with cli_process("model") as model:
        async with aiohttp.ClientSession() as session:
            await wait_until_ready(session, f"{model.base}/healthz")
            before = rss_kib(model.pid)
            url = f"{model.base}/v1/chat/completions"

            async def one(name: str, param: str, body: bytes) -> float:
                start = time.perf_counter()
                async with session.post(url, data=body, headers=JSON) as response:
                    answer = await response.json()
                    elapsed = time.perf_counter() - start
                    assert response.status == 400, (name, param, answer)
                assert answer["error"]["param"] == param, (name, answer)
                assert answer["error"]["type"] == "invalid_request_error"
                assert "Traceback" not in answer["error"]["message"]
                return elapsed

            async def all_at_once() -> list[float]:
                return await asyncio.gather(*(one(*case) for case in cases))

            _, probe = await probed(model.base, all_at_once())
            alone = [(await one(*case), len(case[2]) <= INLINE_BYTES) for case in cases]
            grown = rss_kib(model.pid) - before
    # Each is answered on the loop (at most 64 KiB): the brain's budget is its whole time.
    assert all(inline for _, inline in alone)
    slowest = max(elapsed for elapsed, _ in alone)
    print(
        f"FIGURE builtin model: {len(cases)} hostile schemas at once, /healthz worst "
        f"{probe.worst * 1000:.0f} ms; slowest alone {slowest * 1000:.0f} ms; "
        f"RSS +{grown / 1024:.0f} MiB"
    )
    assert probe.worst < time_bound(strict=0.25, generous=10.0)
    assert slowest < time_bound(strict=0.25, generous=10.0)
    assert grown < 200 * 1024


def test_a_wide_but_legitimate_schema_is_filled() -> None:
    """Large real-world shapes stay well inside the budget."""
    schema = {
        "type": "object",
        "properties": {
            f"field{i}": {"type": "array", "items": {"type": "integer"}, "minItems": 3}
            for i in range(300)
        },
    }
    value = value_for(schema, Facts.of("numbers 1, 2, 3"))
    assert len(value) == 300
    assert value["field0"] == [1, 2, 3]
    assert value["field1"] == [0, 1, 2]  # the prompt's numbers are used once


_SCALAR = st.fixed_dictionaries(
    {"type": st.sampled_from(["string", "integer", "number", "boolean", "null"])},
    optional={
        "minLength": st.integers(0, 20),
        "maxLength": st.integers(0, 40),
        "minimum": st.integers(-50, 50),
        "maximum": st.integers(-50, 50),
        "exclusiveMinimum": st.integers(-50, 50),
        "multipleOf": st.sampled_from([1, 2, 5, 0.5]),
        "format": st.sampled_from(["date", "uuid", "email", "date-time"]),
    },
) | st.fixed_dictionaries(
    {"enum": st.lists(st.integers(0, 5) | st.text(max_size=5) | st.none(), min_size=1, max_size=4)},
    optional={"type": st.sampled_from(["string", "integer", ["string", "null"]])},
)
_SCHEMAS = st.recursive(
    _SCALAR,
    lambda inner: (
        st.fixed_dictionaries(
            {"type": st.just("array"), "items": inner},
            optional={
                "minItems": st.integers(0, 3),
                "maxItems": st.integers(0, 4),
                "uniqueItems": st.booleans(),
            },
        )
        | st.builds(
            lambda props, required, extra: {
                "type": "object",
                "properties": props,
                "required": [k for k in props if k in required],
                "additionalProperties": extra,
            },
            st.dictionaries(st.text("abc_xyz", min_size=1, max_size=6), inner, max_size=5),
            st.sets(st.text("abc_xyz", min_size=1, max_size=6)),
            st.booleans(),
        )
        | st.builds(lambda options: {"anyOf": options}, st.lists(inner, min_size=1, max_size=3))
    ),
    max_leaves=12,
)
_ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "properties",
                    "required",
                    "items",
                    "$ref",
                    "anyOf",
                    "allOf",
                    "enum",
                    "minItems",
                    "minLength",
                    "maximum",
                    "exclusiveMinimum",
                    "multipleOf",
                    "prefixItems",
                    "additionalProperties",
                    "minProperties",
                    "const",
                ]
            )
            | st.text(max_size=4),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_SCHEMAS, st.integers(0, 1000))
def test_generated_values_are_valid_for_the_schema(schema: dict[str, Any], seed: int) -> None:
    """Within the keywords it reads, every value it makes validates (or it says which
    schema no value satisfies, e.g. minimum above maximum)."""
    jsonschema = pytest.importorskip("jsonschema")
    try:
        value = value_for(schema, Facts.of("Paris 'x' 3 4.5 -2"), seed)
    except SchemaError:
        return
    jsonschema.validate(value, schema)


@settings(max_examples=500, deadline=None)
@given(_ANY_JSON, st.integers(0, 10))
def test_any_json_as_a_schema_gives_a_value_or_a_schema_error(schema: Any, seed: int) -> None:
    """Whatever JSON comes as a schema (types wrong, keywords nonsensical): a value or
    SchemaError, never another exception, and the work within the budget."""
    try:
        value = value_for(schema, Facts.of("in Rome, 'a', 1 2 3"), seed)
    except SchemaError:
        return
    assert len(json.dumps(value)) < MAX_TOTAL_CHARS + 100 * MAX_STEPS
