"""``BuiltinChatModel``: the builtin model's brain as an in-process LangChain chat model.

No HTTP, no latency: the zero-latency model of the overhead benchmarks, and a handy
double for users' own tests. Answers exactly what the builtin server would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from .behavior import DEFAULT_MODEL
from .brain import PIECE, respond

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


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


class BuiltinChatModel(BaseChatModel):
    model_name: str = DEFAULT_MODEL

    @property
    def _llm_type(self) -> str:
        return "agentwatch-builtin"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tools = [t["function"]["name"] for t in kwargs.get("tools") or []]
        reply = respond([to_wire(m) for m in messages], tools)
        message = AIMessage(
            content=reply.content,
            tool_calls=[
                {"id": c.id, "name": c.name, "args": json.loads(c.arguments), "type": "tool_call"}
                for c in reply.tool_calls
            ],
            usage_metadata={
                "input_tokens": reply.prompt_tokens,
                "output_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            },
            response_metadata={"model_name": self.model_name},
        )
        info = {"finish_reason": reply.finish_reason}
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """The answer piece by piece (as the server streams it), then usage."""
        result = self._generate(messages, stop, None, **kwargs)
        message = result.generations[0].message
        assert isinstance(message, AIMessage)
        for piece in PIECE.findall(message.text):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                await run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=[
                    {"id": c["id"], "name": c["name"], "args": json.dumps(c["args"]), "index": i}
                    for i, c in enumerate(message.tool_calls)
                ],
                usage_metadata=message.usage_metadata,
                response_metadata=message.response_metadata,
            ),
            generation_info=result.generations[0].generation_info,
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._generate(messages, stop, None, **kwargs)
