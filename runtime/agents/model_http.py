"""The model client's HTTP client: the OpenAI SDK's on aiohttp's transport
(``openai.DefaultAioHttpClient``), with its connection errors told apart from timeouts.

The SDK's aiohttp transport maps every aiohttp connection error, a refused connection
or a server that hung up before its answer too, to ``ConnectTimeout`` (of the classes
an error matches in its map it keeps the first unless a later one's target subclasses
it, and ``ClientConnectionError`` comes before ``ClientConnectorError``), so the SDK
raises its timeout error for them, and that class's name (langchain-openai's
``OpenAITimeoutError``) became the span's ``error.type``, the ``error_type`` label and
the 502 body's error: a model endpoint that refused at once looked like a slow one.
Here such an error is a ``ConnectError`` (the SDK's connection error); a timeout stays
a timeout, the kernel's (``ETIMEDOUT``) included.

And its connections are opened outside the run that asked for them. A connection's
socket callbacks keep the context they were registered in (``contextvars``: asyncio
copies it into each callback; uvloop's transports keep the one current when the
connection was made) for as long as the connection lives, and a run's context
holds the run: LangChain's ``RunnableConfig`` -> LangGraph's task -> its writes, its
messages, a failed run's error and every frame of its traceback. A pooled connection
kept the run that opened it alive until the connection closed, up to one run per
connection in the pool (at 400 clients and 200 runs in flight, 10-13% of the old
generation's objects, each full collection walking them). Opened in an empty context
(a task of its own, ``_opened_apart``; cancelling the caller cancels it, or closes the
connection it opened in the same iteration), it keeps none of its opener. Still held:
a reader a request re-registers after aiohttp paused reading (a response larger than
its buffer, read late) keeps that request's run until the next; the connector's
keep-alive timer keeps the run that released a connection into an empty pool until the
pool empties; a request's read timeout, once cancelled, keeps its run until asyncio
drops cancelled timers (all bounded: one run each). A request's own callbacks still run
in its run's context (OpenTelemetry's HTTP instrumentations see their parent span);
aiohttp's connection hooks (DNS, connect traces) run in the empty one.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp
import httpx2
import openai

T = TypeVar("T")


class ModelHttpClient(openai.DefaultAioHttpClient):
    """``openai.DefaultAioHttpClient`` whose connect "timeouts" that were no timeout
    (the aiohttp error under them is none) are ``httpx2.ConnectError``."""

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx2.AsyncBaseTransport:
        return _context_free(super()._init_transport(*args, **kwargs))

    def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx2.AsyncBaseTransport:
        return _context_free(super()._init_proxy_transport(*args, **kwargs))

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        try:
            return await super().send(request, **kwargs)
        except httpx2.ConnectTimeout as exc:
            if _no_timeout(exc.__cause__):
                raise httpx2.ConnectError(str(exc), request=request) from exc.__cause__
            raise


def _no_timeout(cause: BaseException | None) -> bool:
    """An aiohttp error that is not a timeout: no ``TimeoutError``, and no connection
    the kernel gave up on (``ETIMEDOUT`` arrives as an ``OSError``)."""
    return (
        isinstance(cause, aiohttp.ClientError)
        and not isinstance(cause, TimeoutError)
        and getattr(cause, "errno", None) != errno.ETIMEDOUT
    )


def _context_free(transport: httpx2.AsyncBaseTransport) -> httpx2.AsyncBaseTransport:
    """The SDK's aiohttp transport, its session's connections opened in an empty
    context. A transport of another kind, or one given a session, is left as it is."""
    default_session = getattr(transport, "get_client", None)
    if default_session is None or getattr(transport, "client", None) is not None:
        return transport

    def session() -> aiohttp.ClientSession:
        made: aiohttp.ClientSession = default_session()
        connector = made.connector
        create = getattr(connector, "_create_connection", None)
        if isinstance(connector, aiohttp.BaseConnector) and create is not None:
            setattr(connector, "_create_connection", _opened_apart(create))  # noqa: B010
        return made

    setattr(transport, "get_client", session)  # noqa: B010
    return transport


def _opened_apart(create: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., Awaitable[T]]:
    async def create_connection(*args: Any, **kwargs: Any) -> T:
        opening: asyncio.Task[T] = asyncio.get_running_loop().create_task(
            create(*args, **kwargs), context=contextvars.Context()
        )
        try:
            return await opening
        except BaseException:
            # the caller cancelled (or closed): a connection still opening is cancelled,
            # one opened in the same iteration is closed (nobody else would close it)
            if not opening.done():
                opening.cancel()
            elif not opening.cancelled() and opening.exception() is None:
                _close(opening.result())
            raise

    return create_connection


def _close(connection: object) -> None:
    close = getattr(connection, "close", None)
    if callable(close):
        close()
