"""What failed when a model provider was called: one classification for every caller.

``classify(exc)`` turns an exception raised while calling a provider into a
``ProviderFailure``: a ``kind`` from a small closed vocabulary (``FailureKind``), whether
another attempt may succeed (``transient``), the HTTP status the provider answered, if
any, and the wait it asked for (``Retry-After`` / ``retry-after-ms``, seconds or an
HTTP date). ``None`` means the exception is not a provider's failure (a bug, a refusal
of our own): nobody retries it and nobody blames the model for it.

Its callers decide from the classification alone: the retry loop (``transient``,
``retry_after``), the HTTP service (one table from ``kind`` to status and error code)
and the command line (its model-error line).

Known out of the box (the table ``_classifiers``): the openai SDK's errors (and
langchain-openai's subclasses of them), httpx's (``HTTPStatusError`` by status, timeouts,
lost connections), aiohttp's (``ClientResponseError`` by status, timeouts, connection
errors, a cut-off body), and Python's own ``TimeoutError`` / ``ConnectionError``, which
any code may raise (``source == PYTHON``). A new provider is one call per class of its
errors, once, at start-up (or one row in that table, for a client we ship)::

    def anthropic_status(exc: anthropic.APIStatusError) -> ProviderFailure:
        return from_status(exc.status_code, exc.response.headers, source="anthropic")

    register(anthropic.APIStatusError, anthropic_status)
    register(anthropic.APITimeoutError, by_class(FailureKind.TIMEOUT, source="anthropic"))

A classifier registered later is asked before those registered earlier and the built-in
ones; the first that returns a failure wins, ``None`` passes the question on.

A provider nobody registered is still read by the shape of its errors (``by_shape``),
as the SDKs generated alike (anthropic, mistral, groq, ...) all shape them: an integer
``status_code`` (with the ``response``'s headers, for ``Retry-After``) is classified by
status — so anthropic's 529 "overloaded" is a server error and its 429 waits as asked —
and a class named ``...TimeoutError`` / ``...ConnectionError`` (``APITimeoutError``,
``APIConnectionError``) is a timeout / a lost connection. Nothing else is guessed.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TypeVar

import aiohttp
import httpx
import openai

PYTHON: Final = "python"  # the source of Python's own TimeoutError / ConnectionError


class FailureKind(StrEnum):
    """What went wrong, in words every provider's errors fit."""

    RATE_LIMITED = "rate_limited"  # HTTP 429: too many requests or tokens
    SERVER_ERROR = "server_error"  # HTTP 5xx: the provider failed or is overloaded
    CONFLICT = "conflict"  # HTTP 409: a concurrent request held what this one needed
    TIMEOUT = "timeout"  # no answer in time (the client's deadline, or HTTP 408)
    CONNECTION = "connection"  # no connection, or it was lost before the answer ended
    REFUSED = "refused"  # any other HTTP 4xx: the key, the model name, the request
    OTHER = "other"  # a provider's error of no kind above (a malformed answer, ...)


TRANSIENT_KINDS: Final = frozenset(
    {
        FailureKind.RATE_LIMITED,
        FailureKind.SERVER_ERROR,
        FailureKind.CONFLICT,
        FailureKind.TIMEOUT,
        FailureKind.CONNECTION,
    }
)


@dataclass(frozen=True, slots=True)
class ProviderFailure:
    """One classified failure of a call to a provider."""

    kind: FailureKind
    transient: bool  # another attempt may succeed
    status: int | None = None  # the HTTP status the provider answered with, if any
    retry_after: float | None = None  # seconds the provider asked us to wait, >= 0
    source: str = ""  # whose error it is: "openai", "httpx", "aiohttp", PYTHON, ...

    @classmethod
    def of(
        cls,
        kind: FailureKind,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        source: str = "",
    ) -> ProviderFailure:
        """A failure whose ``transient`` follows from its kind (``TRANSIENT_KINDS``)."""
        return cls(kind, kind in TRANSIENT_KINDS, status, retry_after, source)


E = TypeVar("E", bound=BaseException)
# Says what an exception of one class means; None: not a failure it knows (ask the next).
Classifier = Callable[[E], ProviderFailure | None]


def kind_of_status(status: int) -> FailureKind:
    """The kind of an HTTP error status: 429, 5xx, 408, 409, other 4xx."""
    if status == 429:
        return FailureKind.RATE_LIMITED
    if status >= 500:
        return FailureKind.SERVER_ERROR
    if status == 408:
        return FailureKind.TIMEOUT
    if status == 409:
        return FailureKind.CONFLICT
    return FailureKind.REFUSED if 400 <= status < 500 else FailureKind.OTHER


def from_status(
    status: int, headers: Mapping[str, str] | None, *, source: str = ""
) -> ProviderFailure:
    """The failure an HTTP status answer means, with the wait its headers ask for."""
    return ProviderFailure.of(
        kind_of_status(status),
        status=status,
        retry_after=retry_after_seconds(headers),
        source=source,
    )


def retry_after_seconds(
    headers: Mapping[str, str] | None, *, now: Callable[[], float] = time.time
) -> float | None:
    """The wait a server asked for: ``retry-after-ms`` (milliseconds, as OpenAI and
    Azure send it) first, then ``Retry-After`` in seconds or as an HTTP date (``now``:
    the wall clock it is compared with). Never negative; None when absent or unreadable."""
    if not headers:
        return None
    named = {name.lower(): value for name, value in headers.items()}
    millis = _number(named.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = named.get("retry-after")
    if not value:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def _number(text: str | None) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None


def by_class(kind: FailureKind, *, source: str = "") -> Classifier[BaseException]:
    """A classifier for errors whose class alone says what failed."""
    failure = ProviderFailure.of(kind, source=source)
    return lambda exc: failure


# -- the classifiers known out of the box ----------------------------------------------


def _openai_status(exc: openai.APIStatusError) -> ProviderFailure:
    return from_status(exc.status_code, exc.response.headers, source="openai")


def _openai_transport(exc: openai.APIConnectionError) -> ProviderFailure | None:
    """What the aiohttp error under the SDK's connection error says (None: there is
    none): its aiohttp transport reports every aiohttp connection error, a refused
    connection or a server that hung up too, as a connect timeout."""
    cause = exc.__cause__
    for _ in range(8):  # bounded: a cause chain can loop
        if cause is None or isinstance(cause, aiohttp.ClientError):
            break
        cause = cause.__cause__
    return classify(cause) if isinstance(cause, aiohttp.ClientError) else None


def _httpx_status(exc: httpx.HTTPStatusError) -> ProviderFailure:
    return from_status(exc.response.status_code, exc.response.headers, source="httpx")


def _aiohttp_status(exc: aiohttp.ClientResponseError) -> ProviderFailure:
    return from_status(exc.status, exc.headers, source="aiohttp")


# (exception class, classifier), asked in order: the first that returns a failure wins.
# A client's most specific classes first; Python's own errors after the clients' (aiohttp's
# timeouts are TimeoutErrors too); a client's base class last (its errors of no known kind).
_classifiers: list[tuple[type[BaseException], Classifier[Any]]] = [
    (openai.APIStatusError, _openai_status),
    (openai.APIConnectionError, _openai_transport),
    (openai.APITimeoutError, by_class(FailureKind.TIMEOUT, source="openai")),
    (openai.APIConnectionError, by_class(FailureKind.CONNECTION, source="openai")),
    (httpx.HTTPStatusError, _httpx_status),
    (httpx.TimeoutException, by_class(FailureKind.TIMEOUT, source="httpx")),
    (httpx.NetworkError, by_class(FailureKind.CONNECTION, source="httpx")),
    (httpx.RemoteProtocolError, by_class(FailureKind.CONNECTION, source="httpx")),
    (aiohttp.ClientResponseError, _aiohttp_status),
    (aiohttp.ServerTimeoutError, by_class(FailureKind.TIMEOUT, source="aiohttp")),
    (aiohttp.ClientConnectionError, by_class(FailureKind.CONNECTION, source="aiohttp")),
    (aiohttp.ClientPayloadError, by_class(FailureKind.CONNECTION, source="aiohttp")),  # cut off
    (TimeoutError, by_class(FailureKind.TIMEOUT, source=PYTHON)),
    (ConnectionError, by_class(FailureKind.CONNECTION, source=PYTHON)),
    (openai.APIError, by_class(FailureKind.OTHER, source="openai")),  # e.g. a stream's error
    (httpx.HTTPError, by_class(FailureKind.OTHER, source="httpx")),
    (aiohttp.ClientError, by_class(FailureKind.OTHER, source="aiohttp")),
]


def by_shape(exc: BaseException) -> ProviderFailure | None:
    """An unregistered client's error read by its shape (see the module docstring)."""
    source = (type(exc).__module__ or "").partition(".")[0]
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        return from_status(status, headers if isinstance(headers, Mapping) else None, source=source)
    for cls in type(exc).__mro__:
        if cls.__name__.endswith("TimeoutError"):
            return ProviderFailure.of(FailureKind.TIMEOUT, source=source)
        if cls.__name__.endswith("ConnectionError"):
            return ProviderFailure.of(FailureKind.CONNECTION, source=source)
    return None


def register(exc_type: type[E], classifier: Classifier[E]) -> Callable[[], None]:
    """Classify ``exc_type`` (and its subclasses) with ``classifier``, before every
    classifier registered earlier. Returns a function that takes the registration back."""
    entry = (exc_type, classifier)
    _classifiers.insert(0, entry)

    def unregister() -> None:
        if entry in _classifiers:
            _classifiers.remove(entry)

    return unregister


def classify(exc: BaseException) -> ProviderFailure | None:
    """The failure ``exc`` means, or None when it is no provider's failure."""
    for exc_type, classifier in tuple(_classifiers):
        if isinstance(exc, exc_type):
            failure = classifier(exc)
            if failure is not None:
                return failure
    return by_shape(exc)


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: rate limits, server errors, lost connections, timeouts."""
    failure = classify(exc)
    return failure is not None and failure.transient


def retry_after(exc: BaseException) -> float | None:
    """Seconds the provider asked us to wait before another attempt, if it did."""
    failure = classify(exc)
    return None if failure is None else failure.retry_after
