"""The typed events of a streamed run (``Agent.astream``), and their wire form."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .results import RunResult


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    id: str
    name: str
    arguments: dict[str, Any]
    type: Literal["tool_call"] = "tool_call"


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    id: str
    name: str
    result: str
    error: bool
    type: Literal["tool_result"] = "tool_result"


@dataclass(frozen=True, slots=True)
class RunFinished:
    result: RunResult
    type: Literal["result"] = "result"


RunEvent = TextDelta | ToolCallStarted | ToolCallFinished | RunFinished


def event_data(event: RunEvent) -> dict[str, Any]:
    """The JSON payload of an event (``type`` is sent as the SSE event name)."""
    if isinstance(event, RunFinished):
        return event.result.to_dict()
    data = asdict(event)
    data.pop("type")
    return data


async def read_sse(lines: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, Any]]:
    """Parse a ``text/event-stream`` body as it arrives: ``(event, json data)`` pairs.

    ``lines`` is the body line by line (an aiohttp ``response.content``).
    """
    event, data = "message", list[str]()
    async for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
