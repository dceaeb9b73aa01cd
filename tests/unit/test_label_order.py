"""Labels do not depend on call order: an Agent built first never folds away the agents,
models and tools that the callback handler records later in the same process."""

from __future__ import annotations

import uuid

from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from prometheus_client import CollectorRegistry

from agentwatch.runtime.agents.agent import Agent
from agentwatch.runtime.builtin_model.in_process import BuiltinChatModel
from agentwatch.runtime.langchain.callbacks import AgentwatchCallbackHandler
from agentwatch.runtime.langchain.chat_model import InstrumentedChatModel
from agentwatch.runtime.tools import BUNDLED_CORPUS, SearchIndex, builtin_tools
from agentwatch.telemetry import Telemetry


class Model(InstrumentedChatModel, BuiltinChatModel):
    pass


def count(registry: CollectorRegistry, family: str, **labels: str) -> float:
    return registry.get_sample_value(f"{family}_count", labels) or 0.0


def test_callback_handler_names_keep_their_labels_after_an_agent_is_built(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    index = SearchIndex.from_folder(BUNDLED_CORPUS)
    model = Model(telemetry=telemetry, provider_name="agentwatch")
    Agent(model, builtin_tools(index), telemetry=telemetry, model_name="agentwatch-builtin")

    handler = AgentwatchCallbackHandler(telemetry)
    run_id, llm_id, tool_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    handler.on_chain_start(
        {"name": "billing_agent"}, {}, run_id=run_id, metadata={"ls_model_name": "gpt-4o"}
    )
    handler.on_chat_model_start(
        {}, [[]], run_id=llm_id, parent_run_id=run_id,
        invocation_params={"model": "gpt-4o"}, metadata={"ls_provider": "openai"},
    )  # fmt: skip
    handler.on_llm_end(
        LLMResult(generations=[[ChatGeneration(message=AIMessage(content="hi"))]]), run_id=llm_id
    )
    handler.on_tool_start({"name": "weather"}, "Paris", run_id=tool_id, parent_run_id=run_id)
    handler.on_tool_end("sunny", run_id=tool_id)
    handler.on_chain_end({}, run_id=run_id)

    agent = {"gen_ai_agent_name": "billing_agent", "gen_ai_request_model": "gpt-4o"}
    assert count(registry, "gen_ai_invoke_agent_duration_seconds", **agent, error_type="") == 1
    chat = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "gpt-4o",
        "error_type": "",
    }
    assert count(registry, "gen_ai_client_operation_duration_seconds", **chat) == 1
    tool = {"gen_ai_tool_name": "weather", "gen_ai_agent_name": "billing_agent", "error_type": ""}
    assert count(registry, "gen_ai_execute_tool_duration_seconds", **tool) == 1


def test_a_later_agent_keeps_its_names_when_the_room_is_used_up(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    handler = AgentwatchCallbackHandler(telemetry)
    for i in range(40):  # more chains of users' own code than there is room for
        run_id = uuid.uuid4()
        handler.on_chain_start({"name": f"chain_{i}"}, {}, run_id=run_id)
        handler.on_chain_end({}, run_id=run_id)
    index = SearchIndex.from_folder(BUNDLED_CORPUS)
    model = Model(telemetry=telemetry, provider_name="agentwatch")
    Agent(model, builtin_tools(index), telemetry=telemetry, model_name="late-model", name="late")
    assert telemetry.agents("late") == "late"
    assert telemetry.models("late-model") == "late-model"
    assert telemetry.tools("calculator") == "calculator"
    assert telemetry.agents("chain_0") == "chain_0"  # admitted first: still itself
    assert telemetry.agents("chain_39") == "_OTHER"  # past the room: folded, bounded
