"""``gen_ai.provider.name`` from a LangChain chat model's own metadata, never a guess.

A chat model states its provider for LangSmith in ``_get_ls_params()['ls_provider']``
(``ChatOpenAI``: ``openai``, ``ChatAnthropic``: ``anthropic``, ``ChatBedrock``:
``amazon_bedrock``...). A model that does not override ``_get_ls_params`` states
nothing (LangChain's fallback is its class name), so its ``_llm_type`` is used
instead. The values LangChain's partner packages use are mapped onto the GenAI
semantic conventions' (open-telemetry/semantic-conventions-genai, model/gen-ai/
registry.yaml, read 2026-11-26); any other value is kept as it is (``ollama``,
``fireworks``, a user's own), and the bounded ``gen_ai_provider_name`` label admits
the first eight such values, the rest becoming ``_OTHER``.
"""

from __future__ import annotations

import weakref
from typing import Final

from langchain_core.language_models import BaseChatModel
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GenAiProviderNameValues as _P,
)

BUILTIN_PROVIDER: Final = "agentwatch"
"""The builtin model's provider name (its ``_llm_type`` is ``agentwatch-builtin``)."""

UNKNOWN_PROVIDER: Final = "unknown"

SEMCONV_PROVIDERS: Final[dict[str, str]] = {
    # LangChain's ls_provider (each checked in its partner package) -> semconv value
    "openai": _P.OPENAI.value,
    "azure": _P.AZURE_AI_OPENAI.value,  # AzureChatOpenAI
    "anthropic": _P.ANTHROPIC.value,
    "amazon_bedrock": _P.AWS_BEDROCK.value,  # ChatBedrock, ChatBedrockConverse
    "google_vertexai": _P.GCP_VERTEX_AI.value,  # ChatVertexAI, ChatAnthropicVertex
    "google_genai": _P.GCP_GEMINI.value,  # ChatGoogleGenerativeAI
    "mistral": _P.MISTRAL_AI.value,  # ChatMistralAI
    "xai": _P.X_AI.value,  # ChatXAI
    "groq": _P.GROQ.value,
    "deepseek": _P.DEEPSEEK.value,
    "cohere": _P.COHERE.value,
    # our own model's _llm_type
    "agentwatch-builtin": BUILTIN_PROVIDER,
}


def semconv_provider(raw: str) -> str:
    """A LangChain provider value (``ls_provider`` or ``_llm_type``) as the conventions
    spell it; a value they do not list stays as it is ("" is ``unknown``)."""
    return SEMCONV_PROVIDERS.get(raw, raw) or UNKNOWN_PROVIDER


_by_class: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()


def provider_name(model: BaseChatModel) -> str:
    """The ``gen_ai.provider.name`` of ``model``, from its LangChain metadata.

    Worked out once per model class (``_get_ls_params()`` costs ~20 µs a call) — every
    partner package states the same provider for all instances of a class."""
    cls = type(model)
    name = _by_class.get(cls)
    if name is None:
        name = _by_class[cls] = semconv_provider(_stated_provider(model))
    return name


def _stated_provider(model: BaseChatModel) -> str:
    raw = ""
    if type(model)._get_ls_params is not BaseChatModel._get_ls_params:
        try:
            raw = str(model._get_ls_params().get("ls_provider") or "")
        except Exception:  # a model's metadata never fails its call
            raw = ""
    if not raw:
        try:
            raw = str(model._llm_type)
        except Exception:
            raw = ""
    return raw
