"""A script: the exact replies a test wants, in order, instead of the brain's.

Give one to the server (``ModelBehavior(script=...)``, also through
``BuiltinModelServer.configure``) or to the in-process model
(``BuiltinChatModel(script=...)``)::

    from agentwatch.runtime.builtin_model import ModelBehavior, Reply, ToolCall

    behavior = ModelBehavior(script=(
        Reply("", (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)),
        "It is sunny in Paris.",  # a string: a reply with that content
    ))

Each request takes the next reply, whatever it asks (tools and ``response_format``
included); its token usage is counted as for the brain's. When the script is used up,
the brain answers again. Faults (``fail_first``, ``error_rate``, ...) still come first:
a failed request takes no reply. A tool call's empty id is filled in (``call_<n>``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .brain import Reply, with_usage


class Script:
    """Scripted replies, taken one per request (not thread-safe: one event loop)."""

    def __init__(self, replies: Iterable[Reply | str] = ()) -> None:
        self._replies = tuple(_reply(r) for r in replies)
        self._next = 0

    def __len__(self) -> int:
        """The replies not taken yet."""
        return len(self._replies) - self._next

    def take(self, messages: Sequence[Mapping[str, Any]], *, cached: bool = False) -> Reply | None:
        """The next reply, with its usage for ``messages`` (None: the script is used up;
        ``cached``: as ``with_usage``)."""
        if self._next >= len(self._replies):
            return None
        reply = self._replies[self._next]
        self._next += 1
        calls = tuple(
            c if c.id else dataclasses.replace(c, id=f"call_{self._next}_{number}")
            for number, c in enumerate(reply.tool_calls)
        )
        return with_usage(messages, dataclasses.replace(reply, tool_calls=calls), cached=cached)


def _reply(reply: Reply | str) -> Reply:
    if isinstance(reply, str):
        return Reply(reply)
    if isinstance(reply, Reply):
        return reply
    raise TypeError(f"a scripted reply is a Reply or a string, not {type(reply).__name__}")
