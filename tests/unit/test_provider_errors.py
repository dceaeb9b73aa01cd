"""One classification of provider errors: kinds, transience and waits for OpenAI's SDK,
httpx, aiohttp and Python's own errors, and a new provider added in one call."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import anthropic
import httpx
import openai
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from agentwatch.runtime.provider_errors import (
    PYTHON,
    TRANSIENT_KINDS,
    FailureKind,
    ProviderFailure,
    by_class,
    classify,
    from_status,
    is_transient,
    register,
    retry_after,
    retry_after_seconds,
)

URL = "http://127.0.0.1/v1/chat/completions"
K = FailureKind


def response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, request=httpx.Request("POST", URL))


def openai_status(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    return openai.APIStatusError(f"HTTP {status}", response=response(status, headers), body=None)


def httpx_status(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    r = response(status, headers)
    return httpx.HTTPStatusError(f"HTTP {status}", request=r.request, response=r)


def aiohttp_status(status: int, headers: dict[str, str] | None = None) -> Exception:
    proxy = CIMultiDictProxy(CIMultiDict(headers or {}))
    return aiohttp.ClientResponseError(None, (), status=status, message="nope", headers=proxy)


REQUEST = httpx.Request("POST", URL)


@pytest.mark.parametrize(
    ("exc", "kind", "status", "wait", "source"),
    [
        (openai_status(429, {"retry-after": "3"}), K.RATE_LIMITED, 429, 3.0, "openai"),
        (openai_status(503), K.SERVER_ERROR, 503, None, "openai"),
        (openai_status(408), K.TIMEOUT, 408, None, "openai"),
        (openai_status(409), K.CONFLICT, 409, None, "openai"),
        (openai_status(401), K.REFUSED, 401, None, "openai"),
        (openai.APITimeoutError(request=REQUEST), K.TIMEOUT, None, None, "openai"),
        (openai.APIConnectionError(request=REQUEST), K.CONNECTION, None, None, "openai"),
        (openai.APIError("stream error", REQUEST, body=None), K.OTHER, None, None, "openai"),
        (httpx_status(503, {"Retry-After": "7"}), K.SERVER_ERROR, 503, 7.0, "httpx"),
        (httpx_status(404), K.REFUSED, 404, None, "httpx"),
        (httpx.ReadTimeout("slow", request=REQUEST), K.TIMEOUT, None, None, "httpx"),
        (httpx.ConnectError("refused", request=REQUEST), K.CONNECTION, None, None, "httpx"),
        (httpx.RemoteProtocolError("cut", request=REQUEST), K.CONNECTION, None, None, "httpx"),
        (httpx.DecodingError("gzip", request=REQUEST), K.OTHER, None, None, "httpx"),
        (aiohttp_status(429, {"retry-after-ms": "250"}), K.RATE_LIMITED, 429, 0.25, "aiohttp"),
        (aiohttp_status(400), K.REFUSED, 400, None, "aiohttp"),
        (aiohttp.ServerTimeoutError("slow"), K.TIMEOUT, None, None, "aiohttp"),
        (aiohttp.ServerDisconnectedError(), K.CONNECTION, None, None, "aiohttp"),
        (aiohttp.ClientPayloadError("cut"), K.CONNECTION, None, None, "aiohttp"),
        (aiohttp.InvalidURL("x"), K.OTHER, None, None, "aiohttp"),
        (TimeoutError(), K.TIMEOUT, None, None, PYTHON),
        (ConnectionResetError(), K.CONNECTION, None, None, PYTHON),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_each_clients_errors_are_classified(
    exc: BaseException, kind: FailureKind, status: int | None, wait: float | None, source: str
) -> None:
    failure = classify(exc)
    assert failure == ProviderFailure(kind, kind in TRANSIENT_KINDS, status, wait, source)
    assert is_transient(exc) is (kind in TRANSIENT_KINDS)
    assert retry_after(exc) == wait


@pytest.mark.parametrize(
    "exc", [ValueError("bug"), KeyError("bug"), FileNotFoundError("x"), RuntimeError()]
)
def test_what_no_provider_raised_is_not_classified(exc: BaseException) -> None:
    assert classify(exc) is None
    assert not is_transient(exc)


def test_transient_follows_the_kind() -> None:
    assert {k for k in FailureKind if ProviderFailure.of(k).transient} == {
        K.RATE_LIMITED, K.SERVER_ERROR, K.CONFLICT, K.TIMEOUT, K.CONNECTION
    }  # fmt: skip
    assert [from_status(s, None).kind for s in (429, 500, 599, 408, 409, 403, 422, 302)] == [
        K.RATE_LIMITED, K.SERVER_ERROR, K.SERVER_ERROR, K.TIMEOUT, K.CONFLICT,
        K.REFUSED, K.REFUSED, K.OTHER,
    ]  # fmt: skip


def test_retry_after_forms() -> None:
    def wait(now: float = 0.0, **headers: str) -> float | None:
        named = {name.replace("_", "-"): value for name, value in headers.items()}
        return retry_after_seconds(named, now=lambda: now)

    assert wait(retry_after="3") == 3.0
    assert wait(retry_after="0.5") == 0.5
    assert wait(retry_after_ms="250", retry_after="9") == 0.25  # milliseconds first
    assert wait(Retry_After="4") == 4.0  # any case, even in a plain dict
    assert wait(retry_after="-5") == 0.0
    date = "Wed, 21 Oct 2015 07:28:00 GMT"  # 1445412480 s after the epoch
    assert wait(1445412480.0 - 12, retry_after=date) == 12.0
    assert wait(1445412480.0 + 60, retry_after=date) == 0.0  # already past
    for garbage in ("soon", "inf", "nan", ""):
        assert wait(retry_after=garbage) is None, garbage
    assert wait(retry_after_ms="lots", retry_after="2") == 2.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds({}) is None


class QuotaExhausted(Exception):
    """A made-up provider's error: no HTTP status class, its own wait."""

    def __init__(self, reset_in: float | None) -> None:
        super().__init__("quota exhausted")
        self.reset_in = reset_in


@pytest.fixture
def quota_provider() -> Iterator[None]:
    def classify_quota(exc: QuotaExhausted) -> ProviderFailure | None:
        if exc.reset_in is None:
            return None  # not one it knows: the next classifier decides
        return ProviderFailure.of(K.RATE_LIMITED, retry_after=exc.reset_in, source="quota")

    unregister = register(QuotaExhausted, classify_quota)
    try:
        yield
    finally:
        unregister()


def test_a_new_provider_is_one_registration(quota_provider: None) -> None:
    failure = classify(QuotaExhausted(reset_in=2.0))
    assert failure == ProviderFailure(K.RATE_LIMITED, True, None, 2.0, "quota")
    assert is_transient(QuotaExhausted(reset_in=2.0))
    assert classify(QuotaExhausted(reset_in=None)) is None


def test_a_registration_is_asked_first_and_can_be_taken_back() -> None:
    assert classify(QuotaExhausted(1.0)) is None
    subclass_of_openai = type("GatewayTimeout", (openai.APITimeoutError,), {})
    exc = subclass_of_openai(request=REQUEST)
    assert classify(exc) == ProviderFailure.of(K.TIMEOUT, source="openai")
    unregister = register(subclass_of_openai, by_class(K.SERVER_ERROR, source="gateway"))
    assert classify(exc) == ProviderFailure.of(K.SERVER_ERROR, source="gateway")  # first
    unregister()
    unregister()  # twice is harmless
    assert classify(exc) == ProviderFailure.of(K.TIMEOUT, source="openai")


def anthropic_status(status: int, headers: dict[str, str] | None = None) -> Exception:
    r = httpx.Response(status, headers=headers or {}, request=httpx.Request("POST", ANTHROPIC))
    return anthropic.APIStatusError(f"HTTP {status}", response=r, body=None)


ANTHROPIC = "http://127.0.0.1/v1/messages"
ANTHROPIC_REQUEST = httpx.Request("POST", ANTHROPIC)


@pytest.mark.parametrize(
    ("exc", "kind", "status", "wait"),
    [
        (anthropic_status(429, {"retry-after": "2"}), K.RATE_LIMITED, 429, 2.0),
        (anthropic_status(529), K.SERVER_ERROR, 529, None),  # "overloaded"
        (anthropic_status(400), K.REFUSED, 400, None),
        (anthropic.APITimeoutError(request=ANTHROPIC_REQUEST), K.TIMEOUT, None, None),
        (anthropic.APIConnectionError(request=ANTHROPIC_REQUEST), K.CONNECTION, None, None),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_an_unregistered_providers_errors_are_read_by_their_shape(
    exc: BaseException, kind: FailureKind, status: int | None, wait: float | None
) -> None:
    """anthropic is registered nowhere: its status, Retry-After and error classes decide."""
    failure = classify(exc)
    assert failure == ProviderFailure(kind, kind in TRANSIENT_KINDS, status, wait, "anthropic")


def test_the_shape_is_not_a_guess() -> None:
    class Odd(Exception):
        status_code = "429"  # not an integer status

    class Flagged(Exception):
        status_code = True

    assert classify(Odd()) is None
    assert classify(Flagged()) is None
