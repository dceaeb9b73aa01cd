"""The callback handler records what the instrumented model and tools record: with
content capture on, a chat span carries its input and output messages and a tool span
its result, a tool's reported error included."""

from __future__ import annotations

import uuid

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

from agentwatch.runtime.langchain.callbacks import AgentwatchCallbackHandler
from agentwatch.telemetry import Telemetry


def test_with_capture_on_spans_carry_messages_and_tool_results(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    telemetry = Telemetry(
        tracer_provider=tracer_provider, registry=CollectorRegistry(), capture_content="span"
    )
    handler = AgentwatchCallbackHandler(telemetry)
    run_id, llm_id, ok_id, bad_id = (uuid.uuid4() for _ in range(4))
    handler.on_chain_start({"name": "my_agent"}, {}, run_id=run_id)
    handler.on_chat_model_start(
        {}, [[HumanMessage("weather in Paris?")]], run_id=llm_id, parent_run_id=run_id,
        invocation_params={"model": "gpt-4o"}, metadata={"ls_provider": "openai"},
    )  # fmt: skip
    handler.on_llm_end(
        LLMResult(generations=[[ChatGeneration(message=AIMessage(content="let me look"))]]),
        run_id=llm_id,
    )
    handler.on_tool_start({"name": "weather"}, "Paris", run_id=ok_id, parent_run_id=run_id)
    handler.on_tool_end(ToolMessage("sunny", tool_call_id="c1"), run_id=ok_id)
    handler.on_tool_start({"name": "weather"}, "Nowhere", run_id=bad_id, parent_run_id=run_id)
    handler.on_tool_end(
        ToolMessage("Error: no such city", tool_call_id="c2", status="error"), run_id=bad_id
    )
    handler.on_chain_end({}, run_id=run_id)

    chat, ok, bad, _ = exporter.get_finished_spans()
    chat_attributes = chat.attributes or {}
    assert "weather in Paris?" in str(chat_attributes["gen_ai.input.messages"])
    assert "let me look" in str(chat_attributes["gen_ai.output.messages"])
    assert (ok.attributes or {})["gen_ai.tool.call.result"] == "sunny"
    bad_attributes = bad.attributes or {}
    assert bad_attributes["gen_ai.tool.call.result"] == "Error: no such city"
    assert bad_attributes["error.type"] == "ToolReportedError"
    assert bad.status.status_code is StatusCode.ERROR
