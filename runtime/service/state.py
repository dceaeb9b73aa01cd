"""What every route of the service reads from its application, and the limit they share.

``create_app`` sets the typed state (``SETTINGS_KEY``, ``RUNTIME_KEY``); the routes of
``app.py`` (runs) and ``batches.py`` read it. Identifiers a client gives
(``conversation_id``, a task's id) are at most ``MAX_ID_CHARS`` characters: they go on
spans (the OpenAPI document's ``maxLength`` says the same).
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ..agents.agent_runtime import AgentRuntime
from ..settings import RuntimeSettings

SETTINGS_KEY: Final = web.AppKey("agentwatch_settings", RuntimeSettings)
RUNTIME_KEY: Final = web.AppKey("agentwatch_runtime", AgentRuntime)
MAX_ID_CHARS: Final = 256  # conversation_id, a task's id
