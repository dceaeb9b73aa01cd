"""gen_ai.provider.name from a chat model's LangChain metadata (runtime/langchain/providers.py)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_openai import AzureChatOpenAI, ChatOpenAI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.runtime import BuiltinChatModel, InstrumentedChatModel
from agentwatch.runtime.langchain.providers import provider_name, semconv_provider
from agentwatch.telemetry import Telemetry


def stating(ls_provider: str) -> type[BaseChatModel]:
    """A chat model class stating ``ls_provider`` as a partner package does."""

    class Stated(GenericFakeChatModel):
        def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
            params = super()._get_ls_params(stop=stop, **kwargs)
            params["ls_provider"] = ls_provider
            return params

    return Stated


def replies() -> Any:
    return iter(["hello"] * 10)


@pytest.mark.parametrize(
    ("ls_provider", "expected"),
    [
        ("anthropic", "anthropic"),
        ("amazon_bedrock", "aws.bedrock"),
        ("google_vertexai", "gcp.vertex_ai"),
        ("google_genai", "gcp.gemini"),
        ("azure", "azure.ai.openai"),
        ("mistral", "mistral_ai"),
        ("xai", "x_ai"),
        ("groq", "groq"),
        ("deepseek", "deepseek"),
        ("cohere", "cohere"),
        ("ollama", "ollama"),  # not in the conventions: kept as it is
        ("fireworks", "fireworks"),
    ],
)
def test_the_stated_provider_is_mapped_onto_the_conventions(
    ls_provider: str, expected: str
) -> None:
    assert provider_name(stating(ls_provider)(messages=replies())) == expected


def test_partner_models_and_ours() -> None:
    assert provider_name(ChatOpenAI(model="gpt-4o", api_key="k")) == "openai"  # type: ignore[arg-type]
    azure = AzureChatOpenAI(
        azure_endpoint="https://example.openai.azure.com",
        azure_deployment="gpt-4o",
        api_version="2024-10-21",
        api_key="k",  # type: ignore[arg-type]
    )
    assert provider_name(azure) == "azure.ai.openai"
    assert provider_name(BuiltinChatModel()) == "agentwatch"


def test_a_model_that_states_nothing_is_its_llm_type_not_its_class_name() -> None:
    # LangChain's own fallback would be "genericfakechatmodel", from the class name.
    assert provider_name(GenericFakeChatModel(messages=replies())) == "generic-fake-chat-model"
    assert semconv_provider("") == "unknown"


def test_instrumented_chat_model_takes_the_provider_of_the_model_it_is_mixed_into(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    class Mixed(InstrumentedChatModel, stating("anthropic")):  # type: ignore[misc, valid-type]
        pass

    Mixed(messages=replies(), telemetry=telemetry).invoke("hi")
    Mixed(messages=replies(), telemetry=telemetry, provider_name="ours").invoke("hi")
    first, second = exporter.get_finished_spans()
    assert (first.attributes or {})["gen_ai.provider.name"] == "anthropic"  # it said openai
    assert (second.attributes or {})["gen_ai.provider.name"] == "ours"  # stated: kept
