"""Tools are checked when registered: a tool that cannot work fails there, with its name
and what is wrong, never when the model calls it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.tools import BaseTool, StructuredTool, tool
from pydantic import BaseModel

from agentwatch.runtime import InvalidToolError, ToolRegistry, ToolSpec
from agentwatch.telemetry import AgentwatchError


class City(BaseModel):
    city: str


class MaybeCity(BaseModel):
    city: str = "Paris"


async def weather(city: str) -> str:
    return f"sunny in {city}"


async def other_name(town: str) -> str:
    return town


async def two_arguments(city: str, units: str) -> str:
    return city


def sync_weather(city: str) -> str:
    return f"sunny in {city}"


@tool
def lc_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def dotted() -> BaseTool:
    return StructuredTool.from_function(coroutine=weather, name="fs.read", description="x")


CASES: list[tuple[str, Callable[[], Any], str]] = [
    ("bad name", lambda: ToolSpec("get weather", "d", weather, City), "'get weather': the name"),
    ("empty name", lambda: ToolSpec("", "d", weather, City), "'': the name must be"),
    ("long name", lambda: ToolSpec("w" * 65, "d", weather, City), "the name must be 1-64"),
    ("MCP-style name", lambda: ToolRegistry([dotted()]), "'fs.read': the name must be"),
    ("no schema", lambda: ToolSpec("w", "d", weather, None), "'w': args_schema is missing"),
    ("schema instance", lambda: ToolSpec("w", "d", weather, City(city="x")), "an instance"),
    ("not an object", lambda: ToolSpec("w", "d", weather, {"type": "string"}), "of an object"),
    (
        "required not declared",
        lambda: ToolSpec("w", "d", weather, {"type": "object", "required": ["city"]}),
        "'required' must list some of its properties",
    ),
    ("schema vs func", lambda: ToolSpec("w", "d", other_name, City), "no argument 'city'"),
    ("func needs more", lambda: ToolSpec("w", "d", two_arguments, City), "requires 'units'"),
    ("optional vs required", lambda: ToolSpec("w", "d", weather, MaybeCity), "give it a default"),
    ("a LangChain tool as func", lambda: ToolSpec("w", "d", lc_weather, City), "LangChain tool"),
    ("a call, not a function", lambda: ToolSpec("w", "d", weather("x"), City), "a coroutine"),
    ("a class", lambda: ToolSpec("w", "d", City, City), "the class City"),
    ("zero timeout", lambda: ToolSpec("w", "d", weather, City, timeout=0), "positive, got 0"),
    ("text timeout", lambda: ToolSpec("w", "d", weather, City, timeout="5"), "a number"),  # type: ignore[arg-type]
    ("retry", lambda: ToolSpec("w", "d", weather, City, retry="yes"), "True or False"),  # type: ignore[arg-type]
    ("description", lambda: ToolSpec("w", None, weather, City), "description must be text"),  # type: ignore[arg-type]
    (
        "duplicate",
        lambda: ToolRegistry([ToolSpec("w", "d", weather, City), lc_weather, lc_weather]),
        "'lc_weather': a tool of that name is already registered",
    ),
    ("a plain function", lambda: ToolRegistry([weather]), "'weather': a plain function"),
    ("anything else", lambda: ToolRegistry([42]), "tool 42: not a ToolSpec"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("case", "build", "message"), CASES, ids=[c[0] for c in CASES])
def test_a_tool_that_cannot_work_is_refused_when_registered(
    case: str, build: Callable[[], Any], message: str
) -> None:
    with pytest.raises(InvalidToolError) as raised:
        build()
    assert message in str(raised.value)
    assert str(raised.value).startswith("tool ")
    assert isinstance(raised.value, AgentwatchError)


def test_what_can_work_is_accepted() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": []}

    async def keywords(**kwargs: Any) -> str:
        return str(kwargs)

    async def defaulted(city: str = "Paris") -> str:
        return city

    registry = ToolRegistry(
        [
            ToolSpec("json_schema", "d", defaulted, schema),
            ToolSpec("any_keywords", "d", keywords, City),
            ToolSpec("defaulted", "", defaulted, MaybeCity, timeout=0.5, retry=True),
            lc_weather,
            ToolSpec.from_tool(dotted().model_copy(update={"name": "mcp_read"}), timeout=30),
        ]
    )
    assert registry.names() == [
        "json_schema",
        "any_keywords",
        "defaulted",
        "lc_weather",
        "mcp_read",
    ]
    adopted = registry.get("lc_weather")
    assert adopted.tool is lc_weather
    assert adopted.description == "The weather in a city."
    assert registry.get("mcp_read").timeout == 30


async def test_a_sync_function_runs_in_a_worker_thread() -> None:
    threads: list[int] = []

    def blocking(city: str) -> str:
        threads.append(threading.get_ident())
        return sync_weather(city)

    spec = ToolSpec("weather", "d", blocking, City)
    assert await spec.func(city="Oslo") == "sunny in Oslo"
    assert threads
    assert threads[0] != threading.get_ident()
    assert asyncio.iscoroutinefunction(spec.func)
