"""model_http: the model client tells a refused connection from a timeout, on the
span's ``error.type`` and the metric's label as in the classification (real sockets on
loopback: a port bound but not listening, a listener whose queue is full, one that
takes the connection and never answers)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpServer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.runtime.agents.agent_runtime import build_chat_model
from agentwatch.runtime.agents.model_http import ModelHttpClient
from agentwatch.runtime.provider_errors import FailureKind, classify
from agentwatch.runtime.retry import RetryPolicy
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port bound and not listening, held for the test: connections are refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


@pytest.fixture
def full_port() -> Iterator[int]:
    """A listener that accepts nothing, its queue filled: a connect never completes."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        yield port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A listener that takes connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


async def failed_call(telemetry: Telemetry, port: int) -> BaseException:
    settings = RuntimeSettings(model_timeout=0.5)
    base_url = f"http://127.0.0.1:{port}/v1"
    once = RetryPolicy(max_tries=1)
    model = await asyncio.to_thread(build_chat_model, settings, telemetry, base_url, once)
    try:
        with pytest.raises(openai.APIError) as caught:
            await model.ainvoke("hi")
    finally:
        await model.http_async_client.aclose()
    return caught.value


def chat_error(exporter: InMemorySpanExporter, registry: CollectorRegistry) -> tuple[str, float]:
    """The chat span's ``error.type``, and the calls the metric counted with that label."""
    [span] = [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]
    error = str((span.attributes or {})["error.type"])
    calls = [
        s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == "gen_ai_client_operation_duration_seconds_count"
        and s.labels.get("error_type") == error
    ]
    return error, sum(calls)


async def test_a_refused_connection_is_a_connection_error_not_a_timeout(
    telemetry: Telemetry,
    exporter: InMemorySpanExporter,
    registry: CollectorRegistry,
    refusing_port: int,
) -> None:
    """The SDK's aiohttp transport made it a connect timeout: ``OpenAITimeoutError`` on
    the span and the label, for an endpoint that refused at once."""
    exc = await failed_call(telemetry, refusing_port)
    assert isinstance(exc, openai.APIConnectionError)
    assert not isinstance(exc, openai.APITimeoutError)
    assert classify(exc).kind is FailureKind.CONNECTION
    assert chat_error(exporter, registry) == (type(exc).__name__, 1)
    assert "Timeout" not in type(exc).__name__


@pytest.mark.parametrize("port", ["full_port", "silent_port"])
async def test_a_connect_or_read_timeout_is_still_a_timeout(
    telemetry: Telemetry,
    exporter: InMemorySpanExporter,
    registry: CollectorRegistry,
    port: str,
    request: pytest.FixtureRequest,
) -> None:
    exc = await failed_call(telemetry, request.getfixturevalue(port))
    assert isinstance(exc, openai.APITimeoutError)
    assert classify(exc).kind is FailureKind.TIMEOUT
    assert chat_error(exporter, registry) == (type(exc).__name__, 1)
    assert "Timeout" in type(exc).__name__


class Held:
    """Something a run holds in its context."""


HOLDING: ContextVar[Held] = ContextVar("HOLDING")


async def test_a_pooled_connection_keeps_nothing_of_the_run_that_opened_it(
    aiohttp_server: AiohttpServer,
) -> None:
    """A connection's socket callbacks keep the context they were registered in; opened
    in a run's, the pooled connection kept the run (its LangGraph task, a failed run's
    error and frames) alive until it closed."""
    server = await aiohttp_server(ok_app())
    # no read timeout: its timer, cancelled, keeps its context in the loop's heap until
    # asyncio drops cancelled timers (its own, bounded); the connection's hold is tested
    client = await asyncio.to_thread(ModelHttpClient, timeout=None)  # reads the CA bundle

    url = str(server.make_url("/"))

    async def run() -> weakref.ref[Held]:
        held = Held()
        HOLDING.set(held)
        # two at once: one takes the pooled connection, one opens another
        for response in await asyncio.gather(client.get(url), client.get(url)):
            assert response.json() == {"ok": True}
        return weakref.ref(held)

    try:
        # the first connection, pooled from here: the connector's keep-alive timer is
        # scheduled now, in this context, not in the run's (it keeps its context too)
        assert (await client.get(url)).status_code == 200
        gone = await asyncio.create_task(run())  # a task: a context of its own
        await asyncio.sleep(0)  # the loop lets go of the finished task (its wake-up)
        gc.collect()
        assert gone() is None, "the run's context outlived it"
    finally:
        await client.aclose()


def ok_app() -> web.Application:
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", ok)
    return app


async def test_a_caller_cancelled_as_its_connection_opened_leaves_no_connection(
    aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection opens in a task of its own: a caller cancelled in the iteration in
    which it opened (a deadline, a client gone) would have left it open for ever."""
    server = await aiohttp_server(ok_app())
    callers: list[asyncio.Task[Any]] = []
    opening = aiohttp.TCPConnector._create_connection

    async def opened_then_cancelled(self: Any, *args: Any) -> Any:
        connection = await opening(self, *args)
        asyncio.get_running_loop().call_soon(callers[-1].cancel)
        return connection

    monkeypatch.setattr(aiohttp.TCPConnector, "_create_connection", opened_then_cancelled)
    client = await asyncio.to_thread(ModelHttpClient, timeout=5)  # reads the CA bundle
    try:
        for _ in range(3):
            callers.append(asyncio.create_task(client.get(str(server.make_url("/")))))
            with pytest.raises(asyncio.CancelledError):
                await callers[-1]
        for _ in range(100):  # bounded: 1 s for the server to see the closes
            if not server.handler.connections:
                break
            await asyncio.sleep(0.01)
        assert not server.handler.connections
    finally:
        await client.aclose()
