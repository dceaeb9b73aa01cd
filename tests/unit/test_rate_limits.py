"""Client-side rate limits: the configuration's syntax, the buckets on a simulated clock,
what the provider's headers teach, and the builtin model's own limits."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from agentwatch.runtime.builtin_model.limits import ServedLimits, duration
from agentwatch.runtime.rate_limiter import (
    InProcessBuckets,
    Learned,
    RateLimiter,
    learned_from,
    parse_duration,
)
from agentwatch.runtime.rate_limits import PerModel, RateLimits, RateLimitSyntaxError
from agentwatch.runtime.settings import RuntimeSettings, SettingError
from agentwatch.telemetry import Telemetry

# --- the configuration ---------------------------------------------------------------


def test_a_limit_for_every_model_and_overrides_per_model() -> None:
    limits = PerModel.parse("600, gpt-4o=100,ns/llama3:8b=50")
    assert limits.of("gpt-4o") == 100
    assert limits.of("ns/llama3:8b") == 50
    assert limits.of("anything-else") == 600
    only = PerModel.parse("gpt-4o-mini=5000")
    assert only.of("gpt-4o-mini") == 5000
    assert only.of("gpt-4o") is None
    assert not PerModel.parse("")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("fast", "'fast' is not a whole number per minute"),
        ("gpt-4o=1.5", "'gpt-4o=1.5' is not a whole number per minute"),
        ("=100", "'=100' names no model"),
        ("gpt-4o=0", "at least 1 per minute"),
        ("100,200", "two limits for every model"),
        ("a=1,a=2", "two limits for a"),
    ],
)
def test_a_wrong_limit_list_says_what_and_how(text: str, says: str) -> None:
    with pytest.raises(RateLimitSyntaxError, match=says):
        PerModel.parse(text)


def test_the_settings_refuse_a_wrong_limit_at_start_up_naming_the_variable() -> None:
    settings = RuntimeSettings.from_env(
        {"AGENTWATCH_RATE_LIMIT_RPM": "600", "AGENTWATCH_RATE_LIMIT_TPM": "gpt-4o=30000"}
    )
    assert settings.rate_limits.rpm.of("x") == 600
    assert settings.rate_limits.tpm.of("gpt-4o") == 30000
    assert not RuntimeSettings.from_env({}).rate_limits
    with pytest.raises(SettingError) as error:
        RuntimeSettings.from_env({"AGENTWATCH_RATE_LIMIT_TPM": "gpt-4o:100"})
    message = str(error.value)
    assert message.startswith("AGENTWATCH_RATE_LIMIT_TPM is not valid: 'gpt-4o:100'")
    assert "600,gpt-4o=100" in message  # the syntax, by example


# --- the limiter on a simulated clock ---------------------------------------------------


class SimClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def limiter(telemetry: Telemetry, clock: SimClock, rpm: str = "", tpm: str = "") -> RateLimiter:
    limits = RateLimits(PerModel.parse(rpm), PerModel.parse(tpm))
    return RateLimiter(limits, telemetry, clock=clock, sleep=clock.sleep)


async def test_600_rpm_lets_a_second_through_at_once_then_ten_a_second(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    clock = SimClock()
    rl = limiter(telemetry, clock, rpm="600")
    permits = [await rl.acquire("m", 100) for _ in range(80)]
    waits = [p.waited for p in permits]
    assert waits[:10] == [0.0] * 10  # the burst: one second of the rate
    assert waits[10] == pytest.approx(0.1)
    assert waits[-1] == pytest.approx(7.0)  # 70 more at 10 a second
    count = registry.get_sample_value(
        "agentwatch_rate_limit_wait_seconds_count", {"gen_ai_request_model": "m"}
    )
    assert count == 80
    assert rl.limits_model("m")


async def test_tokens_are_estimated_then_corrected_from_usage(telemetry: Telemetry) -> None:
    clock = SimClock()
    rl = limiter(telemetry, clock, tpm="60000")  # 1,000 tokens a second, a bucket of 1,000
    first = await rl.acquire("m", 1000)  # estimated the whole bucket
    await first.settle(used_tokens=100)  # used a tenth: 900 given back
    second = await rl.acquire("m", 800)
    assert second.waited == 0.0
    third = await rl.acquire("m", 500)  # 100 left: waits for 500 at 1,000/s
    assert third.waited == pytest.approx(0.4)
    refused = await rl.acquire("m", 300)
    await refused.settle(sent=False)  # the provider refused it: it used no tokens


async def test_a_model_without_a_limit_never_waits(telemetry: Telemetry) -> None:
    clock = SimClock()
    rl = limiter(telemetry, clock, rpm="gpt-4o=1")
    assert not rl.limits_model("other")
    for _ in range(5):
        assert (await rl.acquire("other", 10)).waited == 0.0


async def test_the_providers_lower_limit_is_learned_from_its_headers(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    clock = SimClock()
    rl = limiter(telemetry, clock, rpm="6000")  # 100 a second configured

    def per_minute() -> float | None:
        labels = {"gen_ai_request_model": "m", "kind": "requests"}
        return registry.get_sample_value("agentwatch_rate_limit_per_minute", labels)

    assert per_minute() is None  # no call yet
    permit = await rl.acquire("m", 1)
    assert per_minute() == 6000  # the configured rate, on the gauge from the first call
    await permit.settle(
        headers={
            "x-ratelimit-limit-requests": "600",  # the provider: 10 a second
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "100ms",
        }
    )
    waits = [(await rl.acquire("m", 1)).waited for _ in range(3)]
    assert waits == pytest.approx([0.1, 0.2, 0.3])  # at the provider's rate, from empty
    assert per_minute() == pytest.approx(600)  # what the provider said


async def test_retry_after_holds_every_call_back(telemetry: Telemetry) -> None:
    clock = SimClock()
    rl = limiter(telemetry, clock, rpm="6000")
    permit = await rl.acquire("m", 1)
    await permit.settle(headers={"Retry-After": "2"}, sent=False)
    assert (await rl.acquire("m", 1)).waited == pytest.approx(2.0)
    clock.now = 2.5
    assert (await rl.acquire("m", 1)).waited == 0.0


async def test_a_caller_cancelled_while_waiting_gives_its_place_back(telemetry: Telemetry) -> None:
    clock = SimClock()
    rl = RateLimiter(RateLimits(PerModel.parse("60")), telemetry, clock=clock)
    await rl.acquire("m", 1)  # the bucket (1 a second, holds 1) is empty now
    waiting = asyncio.create_task(rl.acquire("m", 1))  # really sleeps 1 s
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    clock.now = 1.0  # one token back: had the cancelled one kept it, this would wait
    assert (await rl.acquire("m", 1)).waited == 0.0


def test_provider_headers_are_read_as_openai_sends_them() -> None:
    learned = learned_from(
        {
            "X-RateLimit-Limit-Requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "29000",
            "x-ratelimit-reset-tokens": "6m0s",
            "retry-after-ms": "1500",
        }
    )
    assert learned["requests"] == Learned(500, 499, 0.12, 1.5)
    assert learned["tokens"] == Learned(30000, 29000, 360.0, 1.5)
    assert learned_from({"content-type": "application/json"}) == {}
    assert learned_from({"x-ratelimit-remaining-tokens": "lots"}) == {}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20", 20.0), ("1.5", 1.5), ("6m0s", 360.0), ("120ms", 0.12), ("1h2m3.5s", 3723.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 s", "-1", "1m-2s", "nan"])
def test_not_durations(text: str) -> None:
    assert parse_duration(text) is None


async def test_in_process_buckets_hold_one_second_of_the_rate() -> None:
    buckets = InProcessBuckets()
    waits = [await buckets.reserve("k", 1, 2.0, 0.0) for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.0, 0.5, 1.0])


# --- the builtin model's own limits ----------------------------------------------------


def test_the_builtin_model_refuses_past_its_limit_with_openais_headers() -> None:
    now = [0.0]
    served = ServedLimits(rpm=120, tpm=None, burst=1.0, clock=lambda: now[0])  # 2 a second
    assert served.admit(10)[0]
    admitted, headers = served.admit(10)
    assert admitted
    assert headers["x-ratelimit-limit-requests"] == "120"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1s"
    admitted, headers = served.admit(10)
    assert not admitted
    assert headers["Retry-After"] == "1"
    assert headers["retry-after-ms"] == "500"
    now[0] = 0.5
    assert served.admit(10)[0]


def test_the_builtin_model_counts_tokens_too() -> None:
    now = [0.0]
    served = ServedLimits(rpm=None, tpm=6000, clock=lambda: now[0])  # a minute's budget
    assert served.admit(5000)[0]
    admitted, headers = served.admit(2000)
    assert not admitted
    assert headers["x-ratelimit-remaining-tokens"] == "1000"
    assert headers["retry-after-ms"] == "10000"  # 1,000 more at 100 a second
    assert "x-ratelimit-limit-requests" not in headers


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.02, "20ms"), (1.5, "1.5s"), (360.0, "6m0s"), (61.25, "1m1.25s")]
)
def test_the_builtin_model_writes_durations_as_openai_does(seconds: float, text: str) -> None:
    assert duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)
