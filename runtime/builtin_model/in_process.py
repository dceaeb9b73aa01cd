"""``BuiltinChatModel``: the builtin model's brain as an in-process LangChain chat model.

No HTTP, no latency: the zero-latency model of the overhead benchmarks, and a handy
double for users' own tests. Answers exactly what the builtin server would: tools bound
with ``bind_tools(tools, tool_choice=...)`` ("any" / "required", a tool's name, "none",
"auto"), ``with_structured_output(schema)`` (through a forced tool call),
``response_format`` in OpenAI's shape (``model.bind(response_format={...})``),
``parallel_tool_calls`` and ``seed``. ``BuiltinChatModel(script=[...])`` answers with
the given replies in order first (``script.py``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, PrivateAttr

from .behavior import DEFAULT_MODEL
from .brain import PIECE, Reply, respond
from .script import Script

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
_REQUEST_OPTIONS = (
    "tool_choice",
    "response_format",
    "parallel_tool_calls",
    "seed",
    "prompt_cache_key",
)


def to_wire(message: BaseMessage) -> dict[str, Any]:
    """A LangChain message in OpenAI's wire shape."""
    wire: dict[str, Any] = {"role": _ROLES.get(message.type, "user"), "content": message.text}
    if isinstance(message, AIMessage) and message.tool_calls:
        wire["tool_calls"] = [
            {
                "id": call.get("id"),
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
            }
            for call in message.tool_calls
        ]
    if isinstance(message, ToolMessage):
        wire["tool_call_id"] = message.tool_call_id
    return wire


def wire_tool_choice(choice: Any, tools: Sequence[dict[str, Any]]) -> Any:
    """LangChain's ``tool_choice`` values in OpenAI's shape, as ``ChatOpenAI`` sends them."""
    if choice in ("any", "required") or (choice is True and len(tools) != 1):
        return "required"
    if choice is True:
        return {"type": "function", "function": {"name": tools[0]["function"]["name"]}}
    if isinstance(choice, str) and choice not in ("auto", "none"):
        return {"type": "function", "function": {"name": choice}}
    return choice


class BuiltinChatModel(BaseChatModel):
    model_name: str = DEFAULT_MODEL
    script: Sequence[Reply | str] = Field(default=(), exclude=True)
    """Replies given in order instead of the brain's (then the brain answers)."""
    _script: Script = PrivateAttr(default_factory=Script)

    def model_post_init(self, context: Any) -> None:
        self._script = Script(self.script)

    @property
    def _llm_type(self) -> str:
        return "agentwatch-builtin"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        specs = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = wire_tool_choice(tool_choice, specs)
        return self.bind(tools=specs, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        wire = [to_wire(m) for m in messages]
        cached = kwargs.get("prompt_cache_key") is not None
        reply = self._script.take(wire, cached=cached) or respond(
            wire,
            kwargs.get("tools") or (),
            **{name: kwargs.get(name) for name in _REQUEST_OPTIONS},
        )
        usage: UsageMetadata = {
            "input_tokens": reply.prompt_tokens,
            "output_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        }
        if cached:
            usage["input_token_details"] = {"cache_read": reply.cached_tokens}
        message = AIMessage(
            content=reply.content,
            tool_calls=[
                {"id": c.id, "name": c.name, "args": json.loads(c.arguments), "type": "tool_call"}
                for c in reply.tool_calls
            ],
            usage_metadata=usage,
            response_metadata={"model_name": kwargs.get("model") or self.model_name},
        )
        info = {"finish_reason": reply.finish_reason}
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])

    def _chunks(self, result: ChatResult) -> Iterator[ChatGenerationChunk]:
        """The answer piece by piece (as the server streams it), then its tool calls and
        usage in the last chunk."""
        message = result.generations[0].message
        assert isinstance(message, AIMessage)
        for piece in PIECE.findall(message.text):
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=[
                    {
                        "id": c["id"],
                        "name": c["name"],
                        "args": json.dumps(c["args"], ensure_ascii=False),
                        "index": i,
                    }
                    for i, c in enumerate(message.tool_calls)
                ],
                usage_metadata=message.usage_metadata,
                response_metadata=message.response_metadata,
                chunk_position="last",
            ),
            generation_info=result.generations[0].generation_info,
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(self._generate(messages, stop, None, **kwargs)):
            if run_manager is not None and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(self._generate(messages, stop, None, **kwargs)):
            if run_manager is not None and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._generate(messages, stop, None, **kwargs)
