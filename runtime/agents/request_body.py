"""The OpenAI SDK's request-body transform, skipped where it cannot change the body.

Before it sends a chat completion, the SDK walks the body against its ``TypedDict``
type (``_utils._transform``: every member of every union, for every message and tool)
to rename aliased keys, format dates and files and dump pydantic models. The chat
completion types have no alias and no format, and LangChain's bodies are plain JSON
(dicts, lists, strings, numbers), so the walk returns what it was given, less the
parameters left out (``omit`` / ``NOT_GIVEN``). It cost ~0.7 ms of the event loop's
CPU per model call of an agent run, one model call's largest item (benchmarks/RESULTS.md
section 11e: 0.02x with the skip).

``install()`` puts ``plain_body`` in front of the SDK's own transform functions in
``chat.completions`` (process-wide, once): a body that is a plain JSON object, for a
type in which no key is renamed and no value formatted anywhere, is returned at once
with the left-out parameters dropped; anything else (a date, a file, a model, a tuple,
an ``omit`` deeper down, a type that renames) goes to the SDK's transform as before.
Equal bodies either way, the same bytes on the wire (tests/unit/test_request_body.py
compares the two); the nested dicts and lists are the caller's own, where the SDK
copied them (a caller that changes its body between the SDK's retries sends the
change). The check walks every value, tool schemas too, which the SDK does not descend
into: its cost depends on the body's shape, 25-40x cheaper than the SDK for the bodies
of the bundled agent (section 11e), 0.5-1.4x the SDK's at 30-120 tools of 40-property
schemas (measured on a busy machine).
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any, Literal, cast, get_args, get_origin

from openai import NotGiven, Omit
from typing_extensions import get_type_hints, is_typeddict

__all__ = ["install", "plain_body", "renames_nothing"]

# the module whose ``create`` transforms chat completion bodies, and its names for it
_COMPLETIONS = "openai.resources.chat.completions.completions"
_TRANSFORM = "openai._utils._transform"  # where the SDK's own transform functions live
_INSTALLING = threading.Lock()
_SCALARS = frozenset({str, int, float, bool, type(None)})
MAX_NODES = 1_000_000  # a body with more values (or a cycle) is left to the SDK

Transform = Callable[[object, object], Any]


@functools.lru_cache(maxsize=256)
def renames_nothing(expected_type: object) -> bool:
    """Whether the SDK's transform leaves every plain JSON value of this type as it is:
    no ``PropertyInfo`` alias or format anywhere in it (unknown type forms: no)."""
    return _plain_type(expected_type, set())


def _plain_type(tp: object, seen: set[int]) -> bool:
    if id(tp) in seen:
        return True
    origin = get_origin(tp)
    if origin is Annotated:
        inner, *metadata = get_args(tp)
        changes = any(
            getattr(m, "alias", None) is not None or getattr(m, "format", None) is not None
            for m in metadata
        )
        return not changes and _plain_type(inner, seen)
    if is_typeddict(tp):
        seen.add(id(tp))
        try:
            hints = get_type_hints(tp, include_extras=True)
        except Exception:  # a forward reference that does not resolve: unknown
            return False
        return all(_plain_type(hint, seen) for hint in hints.values())
    if origin is Literal:
        return True
    if origin is None:
        return isinstance(tp, type) or tp is Any
    # Union, Optional, Required, List, Iterable, Dict...: what they are made of
    return all(_plain_type(arg, seen) for arg in get_args(tp) if arg is not Ellipsis)


def _plain_json(value: object) -> bool:
    """Dicts with string keys, lists, strings, numbers, booleans and None only (exact
    types), fewer than ``MAX_NODES`` values (a cycle counts its values again and again)."""
    budget, stack = MAX_NODES, [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            mapping = cast(dict[object, object], item)
            for key in mapping:
                if type(key) is not str:
                    return False
            values: Collection[object] = mapping.values()
        elif kind is list:
            values = cast(list[object], item)
        else:
            return kind in _SCALARS  # the top one only: values are checked below
        budget -= len(values)
        if budget < 0:
            return False
        for child in values:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append(child)
            elif kind not in _SCALARS:
                return False
    return True


def plain_body(data: object, expected_type: object) -> dict[str, object] | None:
    """``data`` with its left-out parameters dropped, if that is what the SDK's
    transform would make of it; else None (the SDK must transform it)."""
    if type(data) is not dict or not is_typeddict(expected_type):
        return None
    if not renames_nothing(expected_type):
        return None
    body = {k: v for k, v in data.items() if not isinstance(v, (NotGiven, Omit))}
    return body if _plain_json(body) else None


def _skipping_async(transform: Transform) -> Transform:
    async def maybe_transform(data: object, expected_type: object) -> Any:
        body = plain_body(data, expected_type)
        return body if body is not None else await transform(data, expected_type)

    return _marked(maybe_transform, transform)


def _skipping(transform: Transform) -> Transform:
    def maybe_transform(data: object, expected_type: object) -> Any:
        body = plain_body(data, expected_type)
        return body if body is not None else transform(data, expected_type)

    return _marked(maybe_transform, transform)


def _marked(wrapper: Transform, transform: Transform) -> Transform:
    wrapper.__wrapped__ = transform  # type: ignore[attr-defined]
    return wrapper


def install() -> None:
    """Skip the transform of plain chat completion bodies from now on (idempotent).
    Only the SDK's own functions are wrapped: a name someone else has replaced (to
    redact or add fields, say), or an SDK without these names, is left alone."""
    with _INSTALLING:
        try:
            module = importlib.import_module(_COMPLETIONS)
            sdk = importlib.import_module(_TRANSFORM)
        except ImportError:
            return
        names: Mapping[str, Callable[[Transform], Transform]] = {
            "async_maybe_transform": _skipping_async,
            "maybe_transform": _skipping,
        }
        for name, wrap in names.items():
            current = getattr(module, name, None)
            if _the_sdks(current, name) and current is getattr(sdk, name, None):
                setattr(module, name, wrap(cast(Transform, current)))


def _the_sdks(function: object, name: str) -> bool:
    """The SDK's own function of that name (not a wrapper put in both places)."""
    return (
        getattr(function, "__module__", None) == _TRANSFORM
        and getattr(function, "__qualname__", None) == name
        and not hasattr(function, "__wrapped__")
    )
