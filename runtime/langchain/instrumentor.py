"""``AgentwatchInstrumentor``: users' own LangChain and LangGraph code, recorded as
agentwatch's own agent is — the OpenTelemetry way.

::

    from agentwatch.runtime import AgentwatchInstrumentor

    AgentwatchInstrumentor().instrument()   # or: opentelemetry-instrument python app.py
    agent = create_agent(model, tools=[lookup], name="shop")
    agent.invoke({"messages": [...]})       # invoke_agent shop -> chat ... -> execute_tool lookup

It wraps the boundaries themselves with wrapt, as OpenTelemetry's instrumentations do —
no callbacks, no middleware:

- every chat model (``BaseChatModel``): ``generate`` / ``agenerate`` (the marker),
  ``_generate_with_cache`` / ``_agenerate_with_cache`` (one ``chat {model}`` span per
  call), ``stream`` / ``astream`` (``chat_calls.py`` says why these);
- every tool (``BaseTool``): ``run`` / ``arun`` (``execute_tool {tool}``, labelled with
  the enclosing agent's name);
- every named graph (``Pregel``): ``invoke`` / ``ainvoke`` / ``stream`` / ``astream``
  (``invoke_agent {name}``; ``agent_calls.py`` says what is named).

Spans and metrics are those of ``Telemetry``'s factories (``llm_call``, ``tool_call``,
``agent_run``): the same semconv attributes, exemplars, bounded labels and opt-in
content capture as agentwatch's ``Agent``. ``gen_ai.provider.name`` comes from the
model's LangChain metadata (``providers.py``). ``instrument()`` records into the
process's telemetry (``setup_telemetry()`` / ``get_telemetry()``, looked up at each
call); ``instrument(telemetry=...)`` into another. A model or tool that records itself
(``InstrumentedChatModel``, ``InstrumentedTool``) and ``AgentwatchCallbackHandler``
attached as well never give a second span for one call (``recording.py``).
``uninstrument()`` restores every method.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

import wrapt
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import unwrap

from agentwatch.telemetry import Telemetry

from .agent_calls import GraphBoundary
from .chat_calls import ChatBoundary
from .tools import ToolBoundary

_CHAT_MODEL: Final = "langchain_core.language_models.chat_models"
_TOOL: Final = "langchain_core.tools.base"
_GRAPH: Final = "langgraph.pregel.main"

INSTRUMENTS: Final = ("langchain-core >= 1.7, < 2", "langgraph >= 1.0, < 2")


def _targets(telemetry: Telemetry | None) -> list[tuple[str, str, str, Any]]:
    """(module, class, method, wrapper) for every boundary."""
    chat = ChatBoundary(telemetry)
    tool = ToolBoundary(telemetry)
    graph = GraphBoundary(telemetry)
    return [
        (_CHAT_MODEL, "BaseChatModel", "generate", chat.generate),
        (_CHAT_MODEL, "BaseChatModel", "agenerate", chat.agenerate),
        (_CHAT_MODEL, "BaseChatModel", "_generate_with_cache", chat.generate_with_cache),
        (_CHAT_MODEL, "BaseChatModel", "_agenerate_with_cache", chat.agenerate_with_cache),
        (_CHAT_MODEL, "BaseChatModel", "stream", chat.stream),
        (_CHAT_MODEL, "BaseChatModel", "astream", chat.astream),
        (_TOOL, "BaseTool", "run", tool.run),
        (_TOOL, "BaseTool", "arun", tool.arun),
        (_GRAPH, "Pregel", "invoke", graph.invoke),
        (_GRAPH, "Pregel", "ainvoke", graph.ainvoke),
        (_GRAPH, "Pregel", "stream", graph.stream),
        (_GRAPH, "Pregel", "astream", graph.astream),
    ]


class AgentwatchInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Records LangChain chat models, tools and named LangGraph agents into agentwatch's
    telemetry. Entry point ``agentwatch`` of the ``opentelemetry_instrumentor`` group
    (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=agentwatch`` turns it off there)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        """``telemetry=``: record into this ``Telemetry`` (default: the process's)."""
        telemetry: Telemetry | None = kwargs.get("telemetry")
        for module, cls, method, wrapper in _targets(telemetry):
            wrapt.wrap_function_wrapper(module, f"{cls}.{method}", wrapper)

    def _uninstrument(self, **kwargs: Any) -> None:
        for module, cls, method, _ in _targets(None):
            unwrap(f"{module}.{cls}", method)
