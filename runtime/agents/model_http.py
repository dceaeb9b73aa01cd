"""The model client's HTTP client: the OpenAI SDK's on aiohttp's transport
(``openai.DefaultAioHttpClient``), with its connection errors told apart from timeouts.

The SDK's aiohttp transport maps every aiohttp connection error, a refused connection
or a server that hung up too, to ``ConnectTimeout`` (its map picks the first match,
``ClientConnectionError``, over the more specific ``ClientConnectorError``), so the SDK
raises ``APITimeoutError`` for them and that class name became the span's
``error.type``, the ``error_type`` label and the 502 body's error: a model endpoint that
refuses connections looked like a slow one. Here such an error is a ``ConnectError``
(the SDK's ``APIConnectionError``); a timeout stays a timeout.
"""

from __future__ import annotations

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
            cause = exc.__cause__
            if isinstance(cause, aiohttp.ClientError) and not isinstance(cause, TimeoutError):
                raise httpx2.ConnectError(str(exc), request=request) from cause
            raise
