"""Client-side rate limits against the builtin model enforcing its own: real headers,
real 429s, real waits (lower bounds only: a behaviour, not a speed)."""

from __future__ import annotations

import asyncio
import time

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.runtime.agents.agent_runtime import build_chat_model
from agentwatch.runtime.builtin_model import BuiltinModelServer, ModelBehavior
from agentwatch.runtime.langchain.chat_model import InstrumentedChatOpenAI
from agentwatch.runtime.rate_limits import PerModel, RateLimits
from agentwatch.runtime.retry import RetryPolicy
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry

MODEL = "agentwatch-builtin"


async def chat_model(
    telemetry: Telemetry, server: BuiltinModelServer, rpm: str, tries: int = 1
) -> InstrumentedChatOpenAI:
    """The agent's chat model (built in a thread: the client reads its certificates)."""
    settings = RuntimeSettings(rate_limits=RateLimits(rpm=PerModel.parse(rpm)))
    policy = RetryPolicy(max_tries=tries, max_time=120.0)
    return await asyncio.to_thread(build_chat_model, settings, telemetry, server.base_url, policy)


async def test_600_rpm_spreads_80_requests_over_7_s_and_none_is_refused(
    telemetry: Telemetry, registry: CollectorRegistry, exporter: InMemorySpanExporter
) -> None:
    """Without the limiter the 80 calls go at once (well under a second here)."""
    behavior = ModelBehavior(rate_limit_rpm=600)
    async with BuiltinModelServer(behavior) as server:
        model = await chat_model(telemetry, server, "600")
        try:
            start = time.monotonic()
            answers = await asyncio.gather(*(model.ainvoke(f"hi {i}") for i in range(80)))
            took = time.monotonic() - start
        finally:
            await model.http_async_client.aclose()
        refused = server.state.rate_limited
    print(f"FIGURE RPM=600: 80 requests took {took:.2f} s, {refused} refused by the model")
    assert len(answers) == 80
    assert took >= 7.0  # 10 at once, then 10 a second
    assert refused == 0
    labels = {"gen_ai_request_model": MODEL}
    count = registry.get_sample_value("agentwatch_rate_limit_wait_seconds_count", labels)
    waited = registry.get_sample_value("agentwatch_rate_limit_wait_seconds_sum", labels) or 0
    assert count == 80
    assert waited >= 200  # the i-th after the burst waited about i/10 s: 248 s in all
    chats = [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]
    waits = sorted(float((s.attributes or {})["agentwatch.rate_limit.wait"]) for s in chats)
    assert len(waits) == 80
    assert waits[0] == 0.0
    # the last waited for most of the 7 s: it began waiting once the 79 calls before it
    # had begun theirs (LangChain's set-up of a call each: 0.3 s of a busy CI machine)
    assert waits[-1] >= 6.0


async def test_a_lower_limit_of_the_model_is_learned_from_its_headers(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    """Configured 12,000 RPM; the model serves 1,200 (20 a second, a burst of 20). The
    first wave of 100 calls meets 429s; from then on the limiter runs at the model's
    rate and the retries get through. Before: the retries met 429s again and again."""
    behavior = ModelBehavior(rate_limit_rpm=1200, rate_limit_burst=1.0)
    async with BuiltinModelServer(behavior) as server:
        model = await chat_model(telemetry, server, "12000", tries=6)
        first_wave: list[int] = []

        async def call(i: int) -> None:
            await model.ainvoke(f"hi {i}")

        async def watch() -> None:
            for _ in range(100):  # bounded: until the first wave is answered (<= 10 s)
                if server.requests >= 100:
                    break
                await asyncio.sleep(0.1)
            first_wave.append(server.state.rate_limited)

        try:
            watcher = asyncio.create_task(watch())
            results = await asyncio.gather(*(call(i) for i in range(100)), return_exceptions=True)
            await watcher
        finally:
            await model.http_async_client.aclose()
        total, requests = server.state.rate_limited, server.requests
    failed = [r for r in results if isinstance(r, BaseException)]
    later = total - first_wave[0]
    print(
        f"FIGURE learned limit: 100 calls, {requests} requests, {first_wave[0]} refused in "
        f"the first wave, {later} after it, {len(failed)} failed"
    )
    assert failed == []
    assert first_wave[0] >= 50  # the first wave really met the model's limit
    assert later <= 8  # near zero once the limit is known (before: most retries refused)


async def test_a_streamed_call_waits_too_and_its_headers_teach_the_limit(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    """Configured 6,000 RPM (a burst of 100); the model says 600 on its first stream's
    headers (a burst of 10): 30 streams after it are spread over 2 s. Before: at once."""
    async with BuiltinModelServer(ModelBehavior(rate_limit_rpm=600)) as server:
        model = await chat_model(telemetry, server, "6000")

        async def stream(i: int) -> str:
            return "".join([chunk.text async for chunk in model.astream(f"hi {i}")])

        try:
            await stream(0)  # learns the model's limit from the headers
            start = time.monotonic()
            answers = await asyncio.gather(*(stream(i) for i in range(1, 31)))
            took = time.monotonic() - start
        finally:
            await model.http_async_client.aclose()
        refused = server.state.rate_limited
    print(f"FIGURE 30 streams after learning 600 RPM: {took:.2f} s, {refused} refused")
    assert all(answers)
    assert refused == 0
    assert took >= 1.5  # 20 of them waited for the model's 10 a second
    labels = {"gen_ai_request_model": MODEL}
    assert registry.get_sample_value("agentwatch_rate_limit_wait_seconds_count", labels) == 31
