"""The builtin model: an OpenAI-compatible Chat Completions server, deterministic.

It drives any tool it is given and answers in JSON for a ``response_format``
(``brain.py``); a script of replies replaces it where a test needs an exact sequence
(``script.py``: ``ModelBehavior(script=...)``, ``BuiltinChatModel(script=...)``).
"""

from .behavior import ModelBehavior
from .brain import Reply, ToolCall, count_tokens, respond
from .options import OptionError
from .server import BuiltinModelServer, create_model_app

__all__ = [
    "BuiltinModelServer",
    "ModelBehavior",
    "OptionError",
    "Reply",
    "ToolCall",
    "count_tokens",
    "create_model_app",
    "respond",
]
