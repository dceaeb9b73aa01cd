"""The builtin model speaks OpenAI's wire format to the real clients, and fails on demand."""

from __future__ import annotations

import asyncio

import openai
import pytest
from aiohttp import ClientSession
from langchain_core.messages import AIMessageChunk
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from agentwatch.runtime.builtin_model import BuiltinModelServer, ModelBehavior

pytestmark = pytest.mark.integration

CALC_TOOL = {"type": "function", "function": {"name": "calculator", "parameters": {}}}


@tool
async def calculator(expression: str) -> str:
    """Evaluate arithmetic."""
    return expression


async def test_openai_client_non_streamed_and_streamed() -> None:
    async with BuiltinModelServer() as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        reply = await client.chat.completions.create(
            model="agentwatch-builtin",
            messages=[{"role": "user", "content": "what is 123 + 456"}],
            tools=[CALC_TOOL],  # type: ignore[list-item]
        )
        call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert call.function.name == "calculator"  # type: ignore[union-attr]
        assert call.function.arguments == '{"expression": "123 + 456"}'  # type: ignore[union-attr]
        assert reply.choices[0].finish_reason == "tool_calls"
        assert reply.usage is not None
        assert reply.usage.total_tokens > 0

        stream = await client.chat.completions.create(
            model="agentwatch-builtin",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, usage = [], None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        assert len(pieces) > 5
        assert "".join(pieces).startswith("I am the agentwatch builtin model.")
        assert usage is not None
        assert usage.completion_tokens > 0
        await client.close()


async def test_langchain_chat_openai_streams_tool_call_deltas() -> None:
    async with BuiltinModelServer() as server:
        model = ChatOpenAI(
            model="agentwatch-builtin", base_url=server.base_url, api_key="k", stream_usage=True
        ).bind_tools([calculator])
        merged: AIMessageChunk | None = None
        async for chunk in model.astream("compute 6 * 7"):
            assert isinstance(chunk, AIMessageChunk)
            merged = chunk if merged is None else merged + chunk
        assert merged is not None
        assert merged.tool_calls[0]["name"] == "calculator"
        assert merged.tool_calls[0]["args"] == {"expression": "6 * 7"}
        assert merged.usage_metadata is not None


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fragment"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"[]", "application/json", 400, "JSON object"),
        (b'{"model": "m"}', "application/json", 400, "messages"),
        (b'{"model": "m", "messages": [{"role": "wizard"}]}', "application/json", 400, "role"),
        (b'{"model": 5, "messages": []}', "application/json", 400, "model"),
        (b"model=m", "application/x-www-form-urlencoded", 415, "application/json"),
        (b"\xff\xfe", "application/json", 400, "UTF-8"),
    ],
)
async def test_malformed_requests_get_openai_errors(
    body: bytes, content_type: str, status: int, fragment: str
) -> None:
    async with BuiltinModelServer() as server, ClientSession() as http:
        url = f"{server.base_url}/chat/completions"
        async with http.post(url, data=body, headers={"Content-Type": content_type}) as response:
            assert response.status == status
            error = (await response.json())["error"]
            assert fragment in error["message"]
            assert "Traceback" not in error["message"]
        async with http.get(f"{server.base_url}/nope") as response:
            assert response.status == 404
            assert (await response.json())["error"]["type"] == "not_found_error"


async def test_faults_429_with_retry_after_then_success() -> None:
    behavior = ModelBehavior(fail_first=2, fail_status=429, retry_after=0.25)
    async with BuiltinModelServer(behavior) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        for _ in range(2):
            with pytest.raises(openai.RateLimitError) as limited:
                await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}]
                )
            assert limited.value.response.headers["Retry-After"] == "0.25"
        ok = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert ok.choices[0].message.content
        assert server.requests == 3
        await client.close()


async def test_faults_500_and_hang_are_seeded_and_bounded() -> None:
    behavior = ModelBehavior(error_rate=1.0, fail_status=500)
    async with BuiltinModelServer(behavior) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        server.configure(ModelBehavior(hang_rate=1.0, hang_for=5.0))
        hung = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=0.3)
        with pytest.raises(openai.APITimeoutError):
            await hung.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        await asyncio.gather(client.close(), hung.close())


async def test_models_route_lists_the_configured_models() -> None:
    async with BuiltinModelServer(ModelBehavior(models=("a", "b"))) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        models = await client.models.list()
        assert [m.id for m in models.data] == ["a", "b"]
        await client.close()


async def test_a_client_gone_mid_body_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """A caller cancelled while sending its request (a run stopped at shutdown) is normal:
    no error logged, no traceback (it once logged "unexpected error" for each)."""
    async with BuiltinModelServer() as server:
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model": '
        )
        with caplog.at_level("DEBUG", logger="agentwatch"):
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(head)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            for _ in range(100):  # bounded: until the server has seen the disconnect
                if any("disconnected" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.02)
    assert any("disconnected" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= 40], caplog.text
