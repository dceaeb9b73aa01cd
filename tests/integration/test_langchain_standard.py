"""LangChain's own standard chat-model tests (``langchain-tests``'
``ChatModelIntegrationTests``) against the builtin model (issue 16): ``ChatOpenAI`` over
HTTP against ``agentwatch model`` in its own process on 127.0.0.1, and the in-process
``BuiltinChatModel``. Tool calling, tool choice, structured output and JSON mode are on,
and so are model override and Anthropic-style inputs (text and tool blocks).

Not applicable to an offline model, skipped by the standard suite itself (the reason it
prints in brackets):
- test_image_inputs, test_image_tool_message, test_pdf_inputs, test_pdf_tool_message,
  test_audio_inputs: each downloads its image, PDF or audio from the internet (no network
  here) for a model that reads them; the builtin model reads text only ("Model does not
  support image message." and the like);
- test_stream_time: a benchmark replayed from VCR cassettes recorded against a provider's
  API ("VCR not set up.").
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("langchain_tests")

from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests

from agentwatch.runtime.builtin_model.in_process import BuiltinChatModel
from tests.helpers import cli_process

# One event loop for the module's async tests: ChatOpenAI caches its async HTTP client
# process-wide, and a client of a closed loop fails the next test. (The sync tests of
# the standard suite get the mark too; pytest-asyncio warns about them, harmlessly.)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:.*is marked with '@pytest.mark.asyncio' but it is not"),
    pytest.mark.filterwarnings("ignore:Pydantic serializer warnings"),  # the openai SDK's
    # the suite's own pydantic.v1 schema test: ChatOpenAI falls back to function calling
    pytest.mark.filterwarnings("ignore:Received a Pydantic BaseModel V1 schema"),
]


def _wait_until_ready(url: str, seconds: float = 30) -> None:
    for _ in range(int(seconds * 10)):  # bounded
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {seconds} s")


class _Enabled:
    """What both are judged on: the optional features the builtin model offers."""

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_anthropic_inputs(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "agentwatch-builtin-2"  # the model answers in the name it is asked for


class TestChatOpenAIAgainstAgentwatchModel(_Enabled, ChatModelIntegrationTests):
    base_url = ""

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _agentwatch_model(cls) -> Iterator[None]:
        with cli_process("model") as model:
            _wait_until_ready(f"{model.base}/healthz")
            cls.base_url = f"{model.base}/v1"
            yield

    @property
    def chat_model_class(self) -> type[ChatOpenAI]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "model": "agentwatch-builtin",
            "base_url": self.base_url,
            "api_key": "not-needed",
            "stream_usage": True,
        }


class TestBuiltinChatModelInProcess(_Enabled, ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[BuiltinChatModel]:
        return BuiltinChatModel
