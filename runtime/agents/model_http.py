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
"""

from __future__ import annotations

import errno
from typing import Any

import aiohttp
import httpx2
import openai


class ModelHttpClient(openai.DefaultAioHttpClient):
    """``openai.DefaultAioHttpClient`` whose connect "timeouts" that were no timeout
    (the aiohttp error under them is none) are ``httpx2.ConnectError``."""

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
