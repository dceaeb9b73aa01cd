"""The SDK's request-body transform is skipped only where it would return the body as
it is: the same bodies, byte for byte, on the wire and from the function."""

from __future__ import annotations

import datetime
import json
from typing import Annotated, Any, Required

import openai.resources.chat.completions.completions as completions
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import NOT_GIVEN, AsyncOpenAI, omit
from openai._utils import PropertyInfo
from openai._utils import _transform as sdk_transform
from openai.types.chat import completion_create_params
from pydantic import BaseModel
from typing_extensions import TypedDict

from agentwatch.runtime.agents import request_body
from agentwatch.runtime.agents.request_body import plain_body, renames_nothing

PARAMS = completion_create_params.CompletionCreateParamsNonStreaming
STREAMING = completion_create_params.CompletionCreateParamsStreaming
TRANSFORM = sdk_transform.async_maybe_transform  # the SDK's own, whatever is installed
SYNC_TRANSFORM = sdk_transform.maybe_transform

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
text_part = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)})
content = st.text(max_size=30) | st.lists(text_part, max_size=3)
tool_call = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=8),
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": st.text(max_size=8), "arguments": st.text(max_size=20)}
        ),
    }
)
message = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "developer"]), "content": content}
    ),
    st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": st.none() | content},
        optional={"tool_calls": st.lists(tool_call, min_size=1, max_size=2)},
    ),
    st.fixed_dictionaries(
        {"role": st.just("tool"), "content": content, "tool_call_id": st.text(max_size=8)}
    ),
)
tool = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": st.text(min_size=1, max_size=8)},
            optional={
                "description": st.text(max_size=20),
                "parameters": st.dictionaries(st.text(max_size=6), json_values, max_size=4),
                "strict": st.booleans(),
            },
        ),
    }
)
left_out = st.sampled_from([omit, NOT_GIVEN])
body = st.fixed_dictionaries(
    {
        "messages": st.lists(message, min_size=1, max_size=4),
        "model": st.text(min_size=1, max_size=10),
    },
    optional={
        "tools": st.lists(tool, max_size=3),
        "temperature": st.floats(0, 2) | left_out,
        "max_completion_tokens": st.integers(1, 4096) | left_out,
        "stream": st.just(False) | left_out,
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}) | left_out,
        "metadata": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
        "response_format": st.fixed_dictionaries(
            {
                "type": st.just("json_schema"),
                "json_schema": st.fixed_dictionaries(
                    {
                        "name": st.text(min_size=1, max_size=8),
                        "schema": st.dictionaries(st.text(max_size=6), json_values, max_size=3),
                    }
                ),
            }
        ),
        "tool_choice": st.sampled_from(["auto", "none", "required"]) | left_out,
        "audio": left_out,
        "extra_unknown_key": json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body, st.sampled_from([PARAMS, STREAMING]))
async def test_a_plain_body_is_what_the_sdk_would_send(data: dict[str, Any], kind: type) -> None:
    expected = await TRANSFORM(data, kind)
    got = plain_body(data, kind)
    assert got is not None
    assert json.dumps(got) == json.dumps(expected)  # same keys, same order, same values


def fallbacks() -> list[dict[str, Any]]:
    """Bodies the SDK's transform changes (made afresh: one holds a generator)."""
    parts = ({"type": "text", "text": t} for t in ["a", "b"])
    return [
        # an omit deeper than the top: the SDK drops it from the message
        {"model": "m", "messages": [{"role": "user", "content": "hi", "name": omit}]},
        # a tuple of messages, a generator of content parts: the SDK makes lists of them
        {"model": "m", "messages": ({"role": "user", "content": "hi"},)},
        {"model": "m", "messages": [{"role": "user", "content": parts}]},
    ]


@pytest.mark.parametrize("index", range(len(fallbacks())))
async def test_installed_a_body_that_is_not_plain_is_the_sdks_to_transform(
    index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(completions, "async_maybe_transform", TRANSFORM)
    monkeypatch.setattr(completions, "maybe_transform", SYNC_TRANSFORM)
    request_body.install()
    expected = json.dumps(await TRANSFORM(fallbacks()[index], PARAMS))
    assert json.dumps(SYNC_TRANSFORM(fallbacks()[index], PARAMS)) == expected
    assert (
        json.dumps(await completions.async_maybe_transform(fallbacks()[index], PARAMS)) == expected
    )
    assert json.dumps(completions.maybe_transform(fallbacks()[index], PARAMS)) == expected
    assert json.loads(expected)["messages"][0]["role"] == "user"  # what was sent: a list
    assert "name" not in json.loads(expected)["messages"][0]


async def test_a_transform_someone_else_put_there_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def redacting(data: Any, expected_type: object) -> Any:
        return {**(await TRANSFORM(data, expected_type)), "user": "redacted"}

    monkeypatch.setattr(completions, "async_maybe_transform", redacting)
    monkeypatch.setattr(completions, "maybe_transform", SYNC_TRANSFORM)
    # put where the SDK defines its own too: still someone else's
    monkeypatch.setattr(sdk_transform, "async_maybe_transform", redacting)
    request_body.install()
    assert completions.async_maybe_transform is redacting
    assert completions.maybe_transform is not SYNC_TRANSFORM  # the SDK's own: wrapped
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert (await completions.async_maybe_transform(body, PARAMS))["user"] == "redacted"


@pytest.mark.parametrize(
    "value",
    [
        datetime.date(2026, 1, 1),  # formatted by some types: the SDK decides
        ("a", "b"),  # a tuple becomes a list
        {"nested": omit},  # left out deeper than the top
        {1: "a key that is no string"},
        b"bytes",
    ],
)
async def test_anything_but_plain_json_is_left_to_the_sdk(value: object) -> None:
    data = {"messages": [{"role": "user", "content": "hi"}], "model": "m", "metadata": value}
    assert plain_body(data, PARAMS) is None


async def test_a_model_a_cycle_or_a_huge_body_is_left_to_the_sdk() -> None:
    class Schema(BaseModel):
        answer: str

    assert plain_body({"model": "m", "response_format": Schema(answer="x")}, PARAMS) is None
    cyclic: dict[str, object] = {"model": "m"}
    cyclic["self"] = cyclic
    assert plain_body(cyclic, PARAMS) is None  # not a hang
    huge = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}] * (request_body.MAX_NODES // 3),
    }
    assert plain_body(huge, PARAMS) is None
    huge["messages"] = huge["messages"][: request_body.MAX_NODES // 4]  # a long conversation
    assert plain_body(huge, PARAMS) is not None


class Renamed(TypedDict, total=False):
    card_id: Required[Annotated[str, PropertyInfo(alias="cardID")]]


class EmptyAlias(TypedDict, total=False):
    key: Annotated[str, PropertyInfo(alias="")]  # the SDK renames to "" all the same


class Dated(TypedDict, total=False):
    when: Annotated[datetime.date, PropertyInfo(format="iso8601")]


class Deep(TypedDict, total=False):
    items: list[Renamed | Dated]
    plain: str


class Tree(TypedDict, total=False):
    name: str
    children: list[Tree]


async def test_a_type_that_renames_or_formats_anywhere_is_left_to_the_sdk() -> None:
    assert renames_nothing(PARAMS)
    assert renames_nothing(STREAMING)
    assert renames_nothing(Tree)  # a recursive type ends
    for kind in (Renamed, EmptyAlias, Dated, Deep):
        assert not renames_nothing(kind)
    assert plain_body({"card_id": "c"}, Renamed) is None
    assert await TRANSFORM({"card_id": "c"}, Renamed) == {"cardID": "c"}  # what it would break
    assert plain_body({"plain": "p"}, Deep) is None
    assert plain_body({"name": "n", "children": [{"name": "c"}]}, Tree) == {
        "name": "n",
        "children": [{"name": "c"}],
    }


COMPLETION = {
    "id": "c",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
    ],
}


async def test_installed_the_wire_carries_the_same_bytes(
    aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies: list[bytes] = []

    async def chat(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.json_response(COMPLETION)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    server = await aiohttp_server(app, host="127.0.0.1")
    monkeypatch.setattr(completions, "async_maybe_transform", TRANSFORM)
    monkeypatch.setattr(completions, "maybe_transform", SYNC_TRANSFORM)
    client = AsyncOpenAI(api_key="k", base_url=f"http://127.0.0.1:{server.port}/v1", max_retries=0)

    async def create() -> None:
        answer = await client.chat.completions.create(
            model="m",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            tools=[
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
            ],
            temperature=0.5,
            metadata={"k": "v"},
        )
        assert answer.choices[0].message.content == "ok"

    await create()
    request_body.install()
    request_body.install()  # once is enough: not wrapped twice
    installed = completions.async_maybe_transform
    assert installed is not TRANSFORM
    assert installed.__wrapped__ is TRANSFORM
    await create()
    await client.close()
    assert len(bodies) == 2
    assert bodies[0] == bodies[1]
    assert json.loads(bodies[1])["temperature"] == 0.5
