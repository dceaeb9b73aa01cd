"""The builtin model: an OpenAI-compatible Chat Completions server, deterministic."""

from .behavior import ModelBehavior
from .brain import Reply, ToolCall, count_tokens, respond
from .server import BuiltinModelServer, create_model_app

__all__ = [
    "BuiltinModelServer",
    "ModelBehavior",
    "Reply",
    "ToolCall",
    "count_tokens",
    "create_model_app",
    "respond",
]
