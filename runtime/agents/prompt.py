"""The system prompt an agent gets when it is given none: about the tools it really has."""

from __future__ import annotations

from typing import Final

from ..tools.registry import ToolRegistry

NO_TOOLS_PROMPT: Final = "You are a helpful assistant. Answer briefly."
SUMMARY_CHARS: Final = 200  # of each tool's description: its first paragraph, at most


def default_system_prompt(tools: ToolRegistry) -> str:
    """The registry's own instructions (the built-in tools': the research assistant's),
    else each registered tool by name with what its description says it does."""
    if tools.instructions is not None:
        return tools.instructions
    if not len(tools):
        return NO_TOOLS_PROMPT
    lines = "\n".join(
        f"- {spec.name}: {summary}" if (summary := _summary(spec.description)) else f"- {spec.name}"
        for spec in tools
    )
    return (
        f"You are a helpful assistant with these tools:\n{lines}\n"
        "Use a tool when it helps. Answer briefly."
    )


def _summary(description: str) -> str:
    first = " ".join(description.strip().split("\n\n", 1)[0].split())
    return first if len(first) <= SUMMARY_CHARS else first[: SUMMARY_CHARS - 3].rstrip() + "..."
