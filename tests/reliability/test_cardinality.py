"""No input can grow the number of series, and no text ever reaches /metrics."""

from __future__ import annotations

import random
import string
import uuid

from langchain_core.messages import AIMessage
from prometheus_client import CollectorRegistry, generate_latest

from agentwatch.runtime.langchain.callbacks import AgentwatchCallbackHandler
from agentwatch.telemetry import Telemetry

RUNS = 10_000


def series(registry: CollectorRegistry) -> set[str]:
    return {
        line.split(" ")[0]
        for line in generate_latest(registry).decode().splitlines()
        if line and not line.startswith("#")
    }


def words(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + " _-") for _ in range(rng.randint(3, 40)))


def test_ten_thousand_runs_with_random_names_add_a_bounded_number_of_series(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    """Names that come from outside (models a provider reports, tools and chains of users'
    own code through the callback handler, errors with messages) stay in closed sets."""
    rng = random.Random(7)
    handler = AgentwatchCallbackHandler(telemetry)
    secrets = []
    for i in range(RUNS):
        run_id, llm_id, tool_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        prompt = f"prompt-{uuid.uuid4().hex}"
        secrets.append(prompt)
        handler.on_chain_start({"name": words(rng)}, {"input": prompt}, run_id=run_id)
        handler.on_chat_model_start(
            {}, [[]], run_id=llm_id, parent_run_id=run_id,
            invocation_params={"model": f"model-{rng.randint(0, 10**6)}"},
            metadata={"ls_provider": words(rng)},
        )  # fmt: skip
        if i % 3:
            error = type(f"Err{rng.randint(0, 10**6)}", (Exception,), {})(prompt)
            handler.on_llm_error(error, run_id=llm_id)
        else:
            handler.on_llm_end(
                _result(AIMessage(content=f"output-{uuid.uuid4().hex}")), run_id=llm_id
            )
        handler.on_tool_start(
            {"name": f"tool-{rng.randint(0, 10**6)}"}, prompt, run_id=tool_id, parent_run_id=run_id
        )
        handler.on_tool_end("ok", run_id=tool_id)
        handler.on_chain_end({}, run_id=run_id)
        if i == 999:
            after_1k = len(series(registry))
    final = series(registry)
    assert len(final) == after_1k, "series kept growing after the first 1,000 runs"
    assert len(final) < 3_000
    text = generate_latest(registry).decode()
    assert "prompt-" not in text
    assert "output-" not in text
    assert '"_OTHER"' in text


def _result(message: AIMessage) -> object:
    from langchain_core.outputs import ChatGeneration, LLMResult

    return LLMResult(generations=[[ChatGeneration(message=message)]])
