"""Reading ``/metrics`` pages: one bounded, timed GET each, parsed by prometheus_client.

A scrape never stalls the view: each has its own total timeout, which covers the GET and
the parse of the page, all targets are read at once, and a target that fails (refused,
timed out, not a metrics page, 401) becomes a ``Snapshot`` with its ``error`` set, so the
view shows it and the next tick retries it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ...settings import AGENTWATCH_METRICS_TOKEN

# a /metrics page is kilobytes; a larger one would take the parser seconds every tick
MAX_PAGE_BYTES: Final = 16 * 1024 * 1024
# URLs whose page a worker thread still parses (past its deadline: a thread cannot be
# stopped); their next scrape waits for it rather than piling up parses
_PARSING: set[str] = set()
# the text format prometheus_client's parser reads (never OpenMetrics)
ACCEPT: Final = "text/plain;version=0.0.4;q=1.0"

# (sample name, sorted (label, value) pairs): one series of a page
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]

COUNTER_TYPES: Final = frozenset({"counter", "histogram", "summary"})
# the samples a family of each type exposes (a family declared with no series yet)
_SUFFIXES: Final = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One scrape of one target: every series' value, and which series only grow
    (counters, and histograms' buckets, counts and sums)."""

    url: str
    at: float  # time.monotonic() when the answer arrived
    values: Mapping[SeriesKey, float] = field(default_factory=dict)
    cumulative: frozenset[SeriesKey] = frozenset()
    error: str | None = None  # why the scrape failed (then values is empty)
    declared: frozenset[str] = frozenset()  # sample names of every family, series or not

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_page(url: str, text: str, at: float) -> Snapshot:
    """The series of a Prometheus text page (``ValueError`` when it is not one)."""
    values: dict[SeriesKey, float] = {}
    cumulative: set[SeriesKey] = set()
    declared: set[str] = set()
    for family in text_string_to_metric_families(text):
        grows = family.type in COUNTER_TYPES
        declared.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            values[key] = sample.value
            # a histogram's _created (a timestamp) and gsum/gcount of gauge histograms
            # do not only grow; every other sample of a counting family does
            if grows and not sample.name.endswith("_created"):
                cumulative.add(key)
    return Snapshot(url, at, values, frozenset(cumulative), declared=frozenset(declared))


async def _read(response: aiohttp.ClientResponse, limit: int) -> str:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(1 << 16):  # bounded by limit
        size += len(chunk)
        if size > limit:
            raise ValueError(f"the page is larger than {limit >> 20} MiB: not read")
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8")


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": ACCEPT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def scrape(
    session: aiohttp.ClientSession,
    url: str,
    *,
    time_limit: float,
    token: str | None = None,
    limit: int = MAX_PAGE_BYTES,
) -> Snapshot:
    """One scrape of ``url``, read and parsed within ``time_limit`` seconds; a failure is
    a ``Snapshot`` whose ``error`` says why."""
    if url in _PARSING:
        return Snapshot(url, time.monotonic(), error="its last page is still being parsed")
    read = False
    try:
        async with asyncio.timeout(time_limit):
            async with session.get(url, headers=_headers(token)) as response:
                if response.status == 401:
                    return Snapshot(url, time.monotonic(), error=_refused(token))
                if response.status != 200:
                    return Snapshot(url, time.monotonic(), error=f"HTTP {response.status}")
                text = await _read(response, limit)
            read, at = True, time.monotonic()
            # a large page takes the pure-Python parser a while: keys stay answered
            # meanwhile; past the deadline the view goes on (the thread ends on its own)
            _PARSING.add(url)
            return await asyncio.to_thread(_parse_once, url, text, at)
    except TimeoutError:
        doing = "page not parsed" if read else "no answer"
        return Snapshot(url, time.monotonic(), error=f"{doing} within {time_limit:g} s")
    except aiohttp.ClientConnectorError as exc:
        reason = exc.os_error.strerror or _one_line(exc.os_error) or type(exc.os_error).__name__
        return Snapshot(url, time.monotonic(), error=f"cannot connect: {reason}")
    except aiohttp.ClientError as exc:
        return Snapshot(url, time.monotonic(), error=_one_line(exc) or type(exc).__name__)
    except (ValueError, UnicodeDecodeError) as exc:
        error = "not a Prometheus metrics page" if read else _one_line(exc)
        return Snapshot(url, time.monotonic(), error=error)


def _parse_once(url: str, text: str, at: float) -> Snapshot:
    try:
        return parse_page(url, text, at)
    finally:
        _PARSING.discard(url)


def _refused(token: str | None) -> str:
    if token:
        return f"401 unauthorized: the service refused the token in {AGENTWATCH_METRICS_TOKEN}"
    return f"401 unauthorized: set {AGENTWATCH_METRICS_TOKEN} to the service's token"


async def scrape_all(
    session: aiohttp.ClientSession, urls: Sequence[str], *, time_limit: float, token: str | None
) -> list[Snapshot]:
    """Every target at once, in the order given."""
    return list(
        await asyncio.gather(
            *(scrape(session, u, time_limit=time_limit, token=token) for u in urls)
        )
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
