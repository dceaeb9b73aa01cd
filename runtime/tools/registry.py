"""Tools registered by name: a function with an argument schema and a timeout, or a
LangChain tool as it is. Everything is checked when registered (``checks.py``), so a
tool that cannot work fails there with ``InvalidToolError``, never when the model calls it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from langchain_core.tools import BaseTool
from langchain_core.tools.base import ArgsSchema
from langchain_core.utils.function_calling import convert_to_openai_tool

from agentwatch.telemetry import AgentwatchError

from .checks import (
    function_problem,
    in_thread,
    is_async,
    name_problem,
    schema_fields,
    signature_problem,
    timeout_problem,
)

DEFAULT_TOOL_TIMEOUT: Final = 10.0


class ToolError(AgentwatchError):
    """A tool could not be registered or found."""


class InvalidToolError(ToolError):
    """A tool given to a registry cannot work: ``tool`` names it, ``problem`` says why."""

    def __init__(self, tool: str, problem: str) -> None:
        super().__init__(f"tool {tool}: {problem}")
        self.tool = tool
        self.problem = problem


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool: ``func`` is called with the arguments ``args_schema`` declares, by keyword.

    ``func`` is an async function (awaited on the event loop) or a plain one (run in a
    worker thread: it never blocks the loop, and when its ``timeout`` passes the model
    gets the timeout at once while the thread finishes on its own). ``args_schema`` is a
    pydantic model or the JSON schema of an object; the function must accept exactly the
    calls it allows. ``ToolSpec.from_tool(tool)`` stands for a LangChain tool, which the
    agent runs as it is (``tool``). ``retry=True`` retries its transient failures.
    """

    name: str
    description: str
    func: Callable[..., Awaitable[str]]
    args_schema: ArgsSchema
    timeout: float = DEFAULT_TOOL_TIMEOUT
    retry: bool = False  # opt-in: retry transient failures of this tool
    tool: BaseTool | None = None
    """The LangChain tool this spec stands for (``from_tool``), run as it is."""

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise InvalidToolError(repr(self.name), problem)
        if not is_async(self.func):
            object.__setattr__(self, "func", in_thread(self.func))

    @classmethod
    def from_tool(
        cls, tool: BaseTool, *, timeout: float = DEFAULT_TOOL_TIMEOUT, retry: bool = False
    ) -> ToolSpec:
        """A LangChain tool (``@tool``, ``StructuredTool``, any ``BaseTool``: MCP tools
        too) with agentwatch's timeout and retry; it keeps its own argument parsing,
        injected arguments, artifacts and error handling."""
        if not isinstance(tool, BaseTool):
            raise InvalidToolError(repr(tool), "is not a LangChain tool (a BaseTool)")
        schema = tool.args_schema if tool.args_schema is not None else tool.get_input_schema()
        return cls(tool.name, tool.description, _invoker(tool), schema, timeout, retry, tool)

    def _problem(self) -> str | None:
        problem = _value_problem(self.name, self.description, self.func, self.retry)
        if problem is None and self.tool is not None:
            problem = _model_schema_problem(self.tool)
        elif problem is None:
            fields, problem = schema_fields(self.args_schema)
            problem = problem or signature_problem(self.func, fields)
        return problem or timeout_problem(self.timeout)


def _value_problem(name: object, description: object, func: object, retry: object) -> str | None:
    """What the types alone get wrong (the annotations do not hold at run time)."""
    if isinstance(func, BaseTool):
        return "func is a LangChain tool: register the tool itself (or ToolSpec.from_tool)"
    problem = name_problem(name) or function_problem(func)
    if problem is None and not isinstance(description, str):
        problem = f"description must be text, got {type(description).__name__}"
    if problem is None and not isinstance(retry, bool):
        problem = f"retry must be True or False, got {retry!r}"
    return problem


def _model_schema_problem(tool: BaseTool) -> str | None:
    try:
        convert_to_openai_tool(tool)  # what the model is given
    except Exception as exc:  # whatever a tool's own schema raises
        return f"its arguments cannot be described to a model: {type(exc).__name__}: {exc}"
    return None


def _invoker(tool: BaseTool) -> Callable[..., Awaitable[str]]:
    """The tool as a plain async function of its arguments (its text result)."""

    async def run(**kwargs: Any) -> str:
        output = await tool.ainvoke(kwargs)
        return output if isinstance(output, str) else str(getattr(output, "content", output))

    return run


class ToolRegistry:
    """Tools by name: ``ToolSpec``s, and LangChain tools given as they are (each becomes
    ``ToolSpec.from_tool(tool)``, with the default timeout).

    ``instructions``: how a model should use exactly these tools, for an agent's default
    system prompt (None: the agent describes the tools itself). Registering another
    tool drops them, since they no longer speak of every tool.
    """

    def __init__(
        self, specs: Iterable[ToolSpec | BaseTool] | None = None, *, instructions: str | None = None
    ) -> None:
        self._specs: dict[str, ToolSpec] = {}
        for spec in specs or ():
            self.register(spec)
        self.instructions = instructions

    def register(self, spec: ToolSpec | BaseTool) -> ToolSpec:
        if isinstance(spec, BaseTool):
            spec = ToolSpec.from_tool(spec)
        elif not isinstance(spec, ToolSpec):
            raise InvalidToolError(_shown(spec), _not_a_tool(spec))
        if spec.name in self._specs:
            raise InvalidToolError(repr(spec.name), "a tool of that name is already registered")
        self._specs[spec.name] = spec
        self.instructions = None
        return spec

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


def _shown(thing: object) -> str:
    name = getattr(thing, "__name__", None)
    return repr(name) if isinstance(name, str) else repr(thing)[:80]


def _not_a_tool(thing: object) -> str:
    if callable(thing) and not isinstance(thing, type):
        return (
            "a plain function is not a tool: wrap it as ToolSpec(name, description, func, "
            "args_schema) or decorate it with LangChain's @tool"
        )
    return f"not a ToolSpec or a LangChain tool (BaseTool) but {type(thing).__name__}"


RESEARCH_INSTRUCTIONS: Final = (
    "You are a research assistant. Use the calculator for any arithmetic and the search "
    "tool for questions about the documentation. Answer briefly."
)


def builtin_tools(index: Any) -> ToolRegistry:
    """The built-in ``calculator`` and a ``search`` over ``index`` (a SearchIndex), with
    the research assistant's instructions."""
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
        ],
        instructions=RESEARCH_INSTRUCTIONS,
    )
