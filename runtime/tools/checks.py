"""What a tool must be, checked when it is registered — never when the model calls it.

Each check returns the problem as a sentence (None: fine); ``ToolSpec`` raises
``InvalidToolError`` naming the tool with it. A tool's function is called with keyword
arguments only, the ones its schema declares (an optional one only when the model gave
it), so the function and the schema are checked against each other here.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from pydantic import BaseModel

NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""A tool name every chat API accepts (OpenAI's rule for function names)."""

_NAMED: Final = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not NAME.match(name):
        return "the name must be 1-64 letters, digits, '_' or '-' (what chat APIs accept)"
    return None


def timeout_problem(timeout: object) -> str | None:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        return f"timeout must be a number of seconds, got {type(timeout).__name__}"
    if not (timeout > 0 and not math.isnan(timeout)):
        return f"timeout must be positive, got {timeout:g}"
    return None


def schema_fields(schema: object) -> tuple[dict[str, bool], str | None]:
    """The schema's arguments (name: required) and its problem, if any. A schema is a
    pydantic model class or the JSON schema of an object."""
    if schema is None:
        return {}, "args_schema is missing: give a pydantic model of the tool's arguments"
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            schema.model_json_schema()
        except Exception as exc:  # pydantic's several errors for a model it cannot describe
            return {}, f"args_schema {schema.__name__} has no JSON schema: {exc}"
        return {n: f.is_required() for n, f in schema.model_fields.items()}, None
    if isinstance(schema, Mapping):
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        if schema.get("type") != "object" or not isinstance(properties, Mapping):
            return {}, "args_schema must be the JSON schema of an object (type: object)"
        if not isinstance(required, list) or not set(required) <= set(properties):
            return {}, "args_schema's 'required' must list some of its properties"
        return {str(n): n in required for n in properties}, None
    if isinstance(schema, BaseModel):
        return {}, f"args_schema is an instance of {type(schema).__name__}: give the class"
    return {}, (
        f"args_schema must be a pydantic model class or a JSON schema, got {type(schema).__name__}"
    )


def function_problem(func: object) -> str | None:
    """What makes ``func`` unusable as a tool's function (a sync one is fine)."""
    if isinstance(func, type):
        return f"func must be a function, got the class {func.__name__}"
    if inspect.iscoroutine(func):
        func.close()  # never awaited: closed so Python does not warn about it
        return "func must be a function, got a coroutine (pass the function, not its call)"
    if not callable(func):
        return f"func must be a function, got {type(func).__name__}"
    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        return "func must return the tool's result, not yield it (a generator)"
    return None


def signature_problem(func: Callable[..., Any], fields: Mapping[str, bool]) -> str | None:
    """Whether ``func`` accepts the calls its schema allows: every argument by keyword,
    and no required parameter the schema can leave out."""
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: cannot tell
        return None
    named = {p.name: p for p in parameters if p.kind in _NAMED}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    unknown = [n for n in fields if n not in named and not takes_any]
    if unknown:
        return f"func takes no argument {_names(unknown)}, which args_schema declares"
    positional = [
        p.name
        for p in parameters
        if p.kind is inspect.Parameter.POSITIONAL_ONLY and p.default is p.empty
    ]
    if positional:
        return f"func's {_names(positional)} is positional-only: tools are called by keyword"
    undeclared = [n for n, p in named.items() if p.default is p.empty and n not in fields]
    if undeclared:
        return f"func requires {_names(undeclared)}, which args_schema does not declare"
    optional = [n for n, p in named.items() if p.default is p.empty and not fields.get(n, True)]
    if optional:
        return (
            f"func requires {_names(optional)}, which args_schema makes optional "
            "(a call without it would fail): give it a default"
        )
    return None


def is_async(func: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(type(func), "__call__", None)  # noqa: B004 - an object's async __call__
    return not inspect.isroutine(func) and inspect.iscoroutinefunction(call)


def in_thread(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """A sync tool function as an async one that runs it in a worker thread (the loop
    never waits on it; its timeout returns to the model, the thread finishes on its own)."""

    async def run(**kwargs: Any) -> Any:
        result = await asyncio.to_thread(func, **kwargs)
        if inspect.isawaitable(result):  # a plain function that returns a coroutine
            result = await result
        return result

    run.__name__ = getattr(func, "__name__", run.__name__)
    run.__doc__ = func.__doc__
    return run


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)
