"""Over HTTP, the builtin model drives a caller's own tools and structured output
(issue 16), with ChatOpenAI and with raw requests, streamed and not; in-process
(``BuiltinChatModel``) it answers the same; a script replaces the brain when asked."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from agentwatch.runtime.builtin_model import BuiltinModelServer, ModelBehavior, Reply, ToolCall
from agentwatch.runtime.builtin_model.in_process import BuiltinChatModel

pytestmark = pytest.mark.integration

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["zone"],
        },
    },
}
PARIS = "What's the weather in Paris? Use get_weather."


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"It is sunny in {city}."


class Joke(BaseModel):
    """A joke."""

    setup: str = Field(description="question to set up a joke")
    punchline: str = Field(description="answer to resolve the joke")
    rating: int = Field(ge=1, le=5)


@pytest.fixture
def jsonschema() -> Any:
    return pytest.importorskip("jsonschema")


@pytest.fixture
async def server() -> AsyncIterator[BuiltinModelServer]:
    async with BuiltinModelServer() as running:
        yield running


def chat_openai(server: BuiltinModelServer) -> ChatOpenAI:
    return ChatOpenAI(
        model="agentwatch-builtin",
        base_url=server.base_url,
        api_key="k",
        max_retries=0,
        stream_usage=True,
    )


async def post(server: BuiltinModelServer, **body: Any) -> tuple[int, dict[str, Any]]:
    request = {"model": "agentwatch-builtin"} | body
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.base_url}/chat/completions", json=request) as response,
    ):
        return response.status, await response.json()


async def test_chat_openai_calls_a_users_tool_with_arguments_from_the_prompt(
    server: BuiltinModelServer,
) -> None:
    model = chat_openai(server).bind_tools([get_weather])
    message = await model.ainvoke(PARIS)
    assert isinstance(message, AIMessage)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] > 0

    merged: AIMessageChunk | None = None
    async for chunk in model.astream(PARIS):
        assert isinstance(chunk, AIMessageChunk)
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert merged.usage_metadata is not None

    # the tool's result goes back: the answer quotes it
    result = await get_weather.ainvoke(message.tool_calls[0])
    assert isinstance(result, ToolMessage)
    answer = await model.ainvoke([HumanMessage(PARIS), message, result])
    assert answer.text == "The get_weather tool returned: It is sunny in Paris."


async def test_raw_request_gets_a_tool_call_valid_for_the_schema(
    server: BuiltinModelServer, jsonschema: Any
) -> None:
    status, body = await post(
        server, messages=[{"role": "user", "content": PARIS}], tools=[WEATHER]
    )
    assert status == 200, body
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])  # type: ignore[index]
    assert arguments == {"city": "Paris"}
    assert body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


async def test_tool_choice_naming_a_tool_forces_it_whatever_the_prompt(
    server: BuiltinModelServer, jsonschema: Any
) -> None:
    forced = {"type": "function", "function": {"name": "get_time"}}
    status, body = await post(
        server,
        messages=[{"role": "user", "content": PARIS}],
        tools=[WEATHER, TIME],
        tool_choice=forced,
    )
    assert status == 200, body
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_time"
    jsonschema.validate(json.loads(call["function"]["arguments"]), TIME["function"]["parameters"])  # type: ignore[index]
    # "none": no tool, whatever the prompt
    status, body = await post(
        server, messages=[{"role": "user", "content": PARIS}], tools=[WEATHER], tool_choice="none"
    )
    assert body["choices"][0]["finish_reason"] == "stop"
    assert "tool_calls" not in body["choices"][0]["message"]
    # a tool that is not offered: OpenAI's 400 naming the parameter
    status, body = await post(
        server,
        messages=[{"role": "user", "content": PARIS}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "nope"}},
    )
    assert status == 400
    assert body["error"]["param"] == "tool_choice"


@pytest.mark.parametrize("stream", [False, True])
async def test_response_format_json_schema_validates_against_the_schema(
    server: BuiltinModelServer, stream: bool, jsonschema: Any
) -> None:
    schema = Joke.model_json_schema()
    request: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Tell me a joke about cats."}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "Joke", "schema": schema},
        },
    }
    if not stream:
        status, body = await post(server, **request)
        assert status == 200, body
        content = body["choices"][0]["message"]["content"]
    else:
        pieces = []
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{server.base_url}/chat/completions",
                json={"model": "m", "stream": True} | request,
            ) as response,
        ):
            async for line in response.content:
                data = line.decode().removeprefix("data: ").strip()
                if data and data != "[DONE]":
                    for choice in json.loads(data)["choices"]:
                        pieces.append(choice["delta"].get("content") or "")
        content = "".join(pieces)
    jsonschema.validate(json.loads(content), schema)


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # the openai SDK's parse
async def test_with_structured_output_by_json_schema_and_by_function_calling(
    server: BuiltinModelServer,
) -> None:
    for method in ("json_schema", "function_calling"):
        structured = chat_openai(server).with_structured_output(Joke, method=method)
        joke = await structured.ainvoke("Tell me a joke about cats, rated 4.")
        assert isinstance(joke, Joke), method
        assert joke.rating == 4
        streamed = [j async for j in structured.astream("Tell me a joke about cats.")]
        assert streamed
        assert isinstance(streamed[-1], Joke)


async def test_several_calls_in_one_turn_over_http(server: BuiltinModelServer) -> None:
    prompt = "Use get_time for CET and get_weather in Oslo."
    status, body = await post(
        server, messages=[{"role": "user", "content": prompt}], tools=[WEATHER, TIME]
    )
    assert status == 200, body
    calls = [
        (c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in body["choices"][0]["message"]["tool_calls"]
    ]
    assert calls == [("get_time", {"zone": "CET"}), ("get_weather", {"city": "Oslo"})]
    assert len({c["id"] for c in body["choices"][0]["message"]["tool_calls"]}) == 2


@pytest.mark.parametrize(
    ("prompt", "tools", "options"),
    [
        (PARIS, [WEATHER], {}),
        ("Hello!", [WEATHER, TIME], {"tool_choice": "required"}),
        ("what is 6 * 7", [], {}),
        ("Tell me a joke.", [], {"response_format": {"type": "json_object"}}),
    ],
)
async def test_in_process_and_over_http_the_answers_are_the_same(
    server: BuiltinModelServer, prompt: str, tools: list[Any], options: dict[str, Any]
) -> None:
    status, body = await post(
        server, messages=[{"role": "user", "content": prompt}], tools=tools or None, **options
    )
    assert status == 200, body
    wire = body["choices"][0]["message"]
    kwargs = {"tools": tools} if tools else {}
    local = await BuiltinChatModel().bind(**kwargs, **options).ainvoke(prompt)
    assert isinstance(local, AIMessage)
    assert local.content == (wire["content"] or "")
    assert [(c["name"], c["args"], c["id"]) for c in local.tool_calls] == [
        (c["function"]["name"], json.loads(c["function"]["arguments"]), c["id"])
        for c in wire.get("tool_calls", [])
    ]
    assert local.usage_metadata is not None
    assert local.usage_metadata["input_tokens"] == body["usage"]["prompt_tokens"]
    assert local.usage_metadata["output_tokens"] == body["usage"]["completion_tokens"]


async def test_a_script_replaces_the_brain_in_order_then_the_brain_answers() -> None:
    script = (
        Reply("", (ToolCall("", "get_weather", '{"city": "Rome"}'),)),
        "It is sunny in Rome.",
    )
    async with BuiltinModelServer(ModelBehavior(script=script, fail_first=1)) as server:
        model = chat_openai(server).bind_tools([get_weather])
        with pytest.raises(Exception, match="429"):  # a fault takes no scripted reply
            await model.ainvoke("hi")
        first = await model.ainvoke("hi")
        assert [(c["name"], c["args"]) for c in first.tool_calls] == [
            ("get_weather", {"city": "Rome"})
        ]
        assert first.tool_calls[0]["id"] == "call_1_0"
        second = await model.ainvoke("hi")
        assert second.text == "It is sunny in Rome."
        assert second.usage_metadata is not None
        assert second.usage_metadata["output_tokens"] == 6
        third = await model.ainvoke("hi")  # the script is used up: the brain answers
        assert third.text.startswith("I am the agentwatch builtin model.")

    local = BuiltinChatModel(script=["one", "two"])
    assert [(await local.ainvoke("x")).text for _ in range(3)][:2] == ["one", "two"]


def test_a_script_holds_replies_or_strings() -> None:
    with pytest.raises(ValueError, match="script"):
        ModelBehavior(script=(42,))  # type: ignore[arg-type]
    assert ModelBehavior(script=["a"]).script == ("a",)  # type: ignore[arg-type]
