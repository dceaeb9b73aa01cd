"""The retry loop with an injected clock and sleep: waits, limits, classes of errors."""

from __future__ import annotations

import asyncio
import email.utils
import time

import aiohttp
import anthropic
import httpx
import openai
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

from agentwatch.runtime.provider_errors import FailureKind, ProviderFailure, register
from agentwatch.runtime.retry import Retrier, RetryPolicy, is_transient, retry_after
from agentwatch.telemetry import ConfigurationError, Telemetry
from tests.helpers import retry_attempts
from tests.unit.test_provider_errors import httpx_status


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(status, headers=headers or {}, request=request)
    kinds = {400: openai.BadRequestError, 401: openai.AuthenticationError,
             422: openai.UnprocessableEntityError, 429: openai.RateLimitError,
             500: openai.InternalServerError, 503: openai.InternalServerError}  # fmt: skip
    return kinds[status](f"HTTP {status}", response=response, body=None)


class FakeTime:
    """A clock that moves only when the retrier sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def retrier(telemetry: Telemetry, fake: FakeTime, **policy: float) -> Retrier:
    return Retrier(
        RetryPolicy(**policy),  # type: ignore[arg-type]
        telemetry,
        sleep=fake.sleep,
        clock=fake.clock,
        jitter=lambda value: value,  # full jitter would pick in [0, value]
    )


def failing(*errors: BaseException, result: str = "ok") -> tuple[list[int], object]:
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(len(calls) + 1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return calls, attempt


async def test_exponential_waits_then_success(
    telemetry: Telemetry, registry: CollectorRegistry, exporter: InMemorySpanExporter
) -> None:
    fake = FakeTime()
    calls, attempt = failing(status_error(500), status_error(503), ConnectionError("reset"))
    result = await retrier(telemetry, fake, base_delay=0.5).call("chat", attempt)  # type: ignore[arg-type]
    assert result == "ok"
    assert calls == [1, 2, 3, 4]
    assert fake.sleeps == [0.5, 1.0, 2.0]
    assert (retry_attempts(registry, "retry"), retry_attempts(registry, "success")) == (3, 1)
    assert (
        registry.get_sample_value("agentwatch_retry_backoff_seconds_sum", {"operation": "chat"})
        == 3.5
    )
    spans = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert [s.name for s in spans] == ["retry_attempt chat"] * 4
    assert [(s.attributes or {})["agentwatch.retry.attempt"] for s in spans] == [1, 2, 3, 4]
    assert [(s.attributes or {})["agentwatch.retry.wait"] for s in spans] == [0.0, 0.5, 1.0, 2.0]
    assert [(s.attributes or {})["agentwatch.retry.outcome"] for s in spans] == [
        "retry", "retry", "retry", "success"
    ]  # fmt: skip
    assert [(s.attributes or {}).get("error.type") for s in spans] == [
        "InternalServerError", "InternalServerError", "ConnectionError", None
    ]  # fmt: skip


async def test_first_try_success_costs_no_span(
    telemetry: Telemetry, registry: CollectorRegistry, exporter: InMemorySpanExporter
) -> None:
    calls, attempt = failing()
    assert await retrier(telemetry, FakeTime()).call("chat", attempt) == "ok"  # type: ignore[arg-type]
    assert calls == [1]
    assert exporter.get_finished_spans() == ()
    assert retry_attempts(registry, "success") == 1


async def test_retry_after_is_honoured_and_capped(telemetry: Telemetry) -> None:
    fake = FakeTime()
    _, attempt = failing(
        status_error(429, {"retry-after": "3"}),
        status_error(429, {"retry-after-ms": "250"}),
        status_error(429, {"retry-after": "3600"}),
    )
    await retrier(telemetry, fake, retry_after_cap=10).call("chat", attempt)  # type: ignore[arg-type]
    assert fake.sleeps == [3.0, 0.25, 10.0]


@pytest.mark.parametrize("status", [400, 401, 422])
async def test_client_errors_are_never_retried(
    telemetry: Telemetry, registry: CollectorRegistry, status: int
) -> None:
    fake = FakeTime()
    error = status_error(status)
    calls, attempt = failing(error)
    with pytest.raises(openai.APIStatusError) as raised:
        await retrier(telemetry, fake).call("chat", attempt)  # type: ignore[arg-type]
    assert raised.value is error
    assert calls == [1]
    assert fake.sleeps == []
    assert retry_attempts(registry, "failed") == 1  # not worth a retry: no give-up
    assert retry_attempts(registry, "giveup") == 0


async def test_bugs_are_never_retried(telemetry: Telemetry) -> None:
    calls, attempt = failing(KeyError("bug"))
    with pytest.raises(KeyError):
        await retrier(telemetry, FakeTime()).call("chat", attempt)  # type: ignore[arg-type]
    assert calls == [1]


async def test_gives_up_after_max_tries_with_the_last_error_and_a_note(
    telemetry: Telemetry, registry: CollectorRegistry, exporter: InMemorySpanExporter
) -> None:
    errors = [status_error(500) for _ in range(5)]
    calls, attempt = failing(*errors)
    with pytest.raises(openai.InternalServerError) as raised:
        await retrier(telemetry, FakeTime(), max_tries=3).call("chat", attempt)  # type: ignore[arg-type]
    assert raised.value is errors[2]
    assert calls == [1, 2, 3]
    assert "gave up after 3 attempts" in " ".join(raised.value.__notes__)
    assert (retry_attempts(registry, "retry"), retry_attempts(registry, "giveup")) == (2, 1)
    last = max(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert (last.attributes or {})["agentwatch.retry.outcome"] == "giveup"
    assert last.status.status_code is StatusCode.ERROR


async def test_max_time_stops_waits_that_would_overrun(telemetry: Telemetry) -> None:
    fake = FakeTime()
    calls, attempt = failing(*(status_error(503) for _ in range(10)))
    with pytest.raises(openai.InternalServerError):
        await retrier(telemetry, fake, max_tries=10, max_time=5, base_delay=1).call(
            "chat",
            attempt,  # type: ignore[arg-type]
        )
    assert fake.sleeps == [1.0, 2.0]  # the next wait (4 s) would end past 5 s
    assert calls == [1, 2, 3]


async def test_cancellation_is_not_retried(telemetry: Telemetry) -> None:
    calls, attempt = failing(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await retrier(telemetry, FakeTime()).call("chat", attempt)  # type: ignore[arg-type]
    assert calls == [1]


def test_classification_and_settings() -> None:
    assert is_transient(TimeoutError())
    assert is_transient(status_error(429))
    assert is_transient(status_error(503))
    assert not is_transient(status_error(400))
    assert not is_transient(ValueError())
    assert retry_after(status_error(429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0
    assert RetryPolicy.from_env({"AGENTWATCH_RETRY_MAX_TRIES": "7"}).max_tries == 7
    assert RetryPolicy.from_env({"AGENTWATCH_RETRY_MAX_TIME": "2.5"}).max_time == 2.5
    with pytest.raises(ConfigurationError):
        RetryPolicy.from_env({"AGENTWATCH_RETRY_MAX_TRIES": "0"})
    with pytest.raises(ConfigurationError, match="whole number"):
        RetryPolicy.from_env({"AGENTWATCH_RETRY_MAX_TRIES": "many"})


async def test_any_clients_transient_errors_are_retried_with_the_wait_asked_for(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    """Not only OpenAI's SDK: a raw httpx 503 with Retry-After, aiohttp's 429 with
    retry-after-ms, an HTTP-date an hour away (capped), an httpx timeout (backoff)."""
    fake = FakeTime()
    in_an_hour = email.utils.formatdate(time.time() + 3600, usegmt=True)
    limited = aiohttp.ClientResponseError(
        None, (), status=429, headers=CIMultiDictProxy(CIMultiDict({"retry-after-ms": "250"}))
    )
    calls, attempt = failing(
        httpx_status(503, {"Retry-After": "2"}),
        limited,
        httpx_status(502, {"Retry-After": in_an_hour}),
        httpx.ReadTimeout("slow", request=httpx.Request("GET", "http://127.0.0.1/")),
    )
    retrier_ = retrier(telemetry, fake, max_tries=5, retry_after_cap=10, base_delay=0.5)
    assert await retrier_.call("chat", attempt) == "ok"  # type: ignore[arg-type]
    assert calls == [1, 2, 3, 4, 5]
    assert fake.sleeps == [2.0, 0.25, 10.0, 0.5]
    assert (retry_attempts(registry, "retry"), retry_attempts(registry, "success")) == (4, 1)


async def test_a_client_error_of_any_client_is_not_retried(telemetry: Telemetry) -> None:
    error = httpx_status(404, {"Retry-After": "1"})
    calls, attempt = failing(error)
    with pytest.raises(httpx.HTTPStatusError):
        await retrier(telemetry, FakeTime()).call("chat", attempt)  # type: ignore[arg-type]
    assert calls == [1]


class Overloaded(Exception):
    """A made-up provider's error, retried once its classifier is registered."""


async def test_a_registered_providers_error_is_retried(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    fake = FakeTime()
    _, attempt = failing(Overloaded())
    with pytest.raises(Overloaded):
        await retrier(telemetry, fake).call("chat", attempt)  # type: ignore[arg-type]
    unregister = register(
        Overloaded, lambda exc: ProviderFailure.of(FailureKind.SERVER_ERROR, retry_after=1.5)
    )
    try:
        calls, attempt = failing(Overloaded(), Overloaded())
        assert await retrier(telemetry, fake).call("chat", attempt) == "ok"  # type: ignore[arg-type]
    finally:
        unregister()
    assert calls == [1, 2, 3]
    assert fake.sleeps == [1.5, 1.5]


async def test_the_classifier_is_injectable(telemetry: Telemetry) -> None:
    fake = FakeTime()
    calls, attempt = failing(KeyError("flaky"))
    retrier_ = Retrier(
        RetryPolicy(),
        telemetry,
        sleep=fake.sleep,
        clock=fake.clock,
        classify=lambda exc: ProviderFailure.of(FailureKind.CONNECTION, retry_after=0.1),
    )
    assert await retrier_.call("chat", attempt) == "ok"  # type: ignore[arg-type]
    assert (calls, fake.sleeps) == ([1, 2], [0.1])


async def test_a_retried_attempt_is_current_while_it_runs_and_its_span_ends(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """Work an attempt does is a child of its retry_attempt span (the first attempt's
    span is recorded after the fact: its work has none); a cancelled attempt's span
    ends as cancelled and nothing stays current after the call."""
    parents: list[str] = []

    async def attempt() -> str:
        current = trace.get_current_span()
        parents.append(getattr(current, "name", ""))
        with telemetry.tracer.start_as_current_span("work"):
            pass
        if len(parents) == 1:
            raise status_error(503)
        raise asyncio.CancelledError

    before = trace.get_current_span()
    with pytest.raises(asyncio.CancelledError):
        await retrier(telemetry, FakeTime()).call("chat", attempt)
    assert trace.get_current_span() is before
    assert parents == ["", "retry_attempt chat"]
    spans = {s.name + str((s.attributes or {}).get("agentwatch.retry.attempt", "")): s
             for s in exporter.get_finished_spans()}  # fmt: skip
    second = spans["retry_attempt chat2"]
    assert (second.attributes or {})["agentwatch.outcome"] == "cancelled"
    works = [s for s in exporter.get_finished_spans() if s.name == "work"]
    assert [w.parent.span_id if w.parent else None for w in works] == [
        None, second.context.span_id
    ]  # fmt: skip


async def test_an_error_not_worth_a_retry_after_retries_is_failed_not_giveup(
    telemetry: Telemetry, registry: CollectorRegistry, exporter: InMemorySpanExporter
) -> None:
    errors = [status_error(503), status_error(400)]
    calls, attempt = failing(*errors)
    with pytest.raises(openai.APIStatusError) as raised:
        await retrier(telemetry, FakeTime()).call("chat", attempt)  # type: ignore[arg-type]
    assert raised.value is errors[1]
    assert calls == [1, 2]
    assert not any("gave up" in note for note in getattr(raised.value, "__notes__", []))
    counted = {o: retry_attempts(registry, o) for o in ("retry", "giveup", "failed")}
    assert counted == {"retry": 1, "giveup": 0, "failed": 1}
    last = max(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert (last.attributes or {})["agentwatch.retry.outcome"] == "failed"


async def test_anthropics_rate_limit_waits_as_asked_then_succeeds(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    """A provider registered nowhere (anthropic's SDK), retried by its status and Retry-After."""
    request = httpx.Request("POST", "http://127.0.0.1/v1/messages")
    limited = anthropic.RateLimitError(
        "slow down",
        response=httpx.Response(429, headers={"retry-after": "3"}, request=request),
        body=None,
    )
    overloaded = anthropic.APIStatusError(
        "overloaded", response=httpx.Response(529, request=request), body=None
    )
    fake = FakeTime()
    calls, attempt = failing(limited, overloaded, anthropic.APIConnectionError(request=request))
    result = await retrier(telemetry, fake, max_tries=4).call("chat", attempt)  # type: ignore[arg-type]
    assert result == "ok"
    assert calls == [1, 2, 3, 4]
    assert fake.sleeps[0] == 3.0
    assert (retry_attempts(registry, "retry"), retry_attempts(registry, "success")) == (3, 1)
