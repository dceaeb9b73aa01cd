"""Tools registered by name: async callables with an argument schema and a timeout."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel

from agentwatch.telemetry import AgentwatchError

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_TOOL_TIMEOUT: Final = 10.0


class ToolError(AgentwatchError):
    """A tool could not be registered or found."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    func: Callable[..., Awaitable[str]]
    args_schema: type[BaseModel]
    timeout: float = DEFAULT_TOOL_TIMEOUT
    retry: bool = False  # opt-in: retry transient failures of this tool

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ToolError(f"tool name {self.name!r} must match {_NAME.pattern}")
        if not self.timeout > 0:
            raise ToolError(f"tool {self.name!r}: timeout must be positive")


class ToolRegistry:
    def __init__(self, specs: list[ToolSpec] | None = None) -> None:
        self._specs: dict[str, ToolSpec] = {}
        for spec in specs or []:
            self.register(spec)

    def register(self, spec: ToolSpec) -> None:
        if spec.name in self._specs:
            raise ToolError(f"a tool named {spec.name!r} is already registered")
        self._specs[spec.name] = spec

    def get(self, name: str) -> ToolSpec:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs)) or "none"
            raise ToolError(f"unknown tool {name!r} (registered: {known})") from None

    def names(self) -> list[str]:
        return list(self._specs)

    def __iter__(self) -> Iterator[ToolSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)


def builtin_tools(index: Any) -> ToolRegistry:
    """The built-in ``calculator`` and a ``search`` over ``index`` (a SearchIndex)."""
    from .calculator import CalculatorArgs, calculator
    from .search import SearchArgs

    async def search(query: str) -> str:
        """Search the documentation."""
        answer: str = index.answer(query)
        return answer

    return ToolRegistry(
        [
            ToolSpec(
                "calculator",
                "Evaluate an arithmetic expression exactly. Use for any arithmetic.",
                calculator,
                CalculatorArgs,
                timeout=2.0,
            ),
            ToolSpec(
                "search",
                "Search the documentation for passages about a topic.",
                search,
                SearchArgs,
                timeout=5.0,
            ),
        ]
    )
