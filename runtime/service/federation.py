"""One ``/metrics`` for N worker processes (``agentwatch serve --workers N``).

Each worker serves its own registry, in OpenMetrics (exemplars included), on a Unix
socket in a directory the workers share (``<dir>/<index>.sock``; loopback only, nothing
on a port). A scrape of ``/metrics`` on the public port reaches whichever worker the
kernel gave the connection; that worker reads its siblings' sockets at once (each with a
deadline) and answers with every worker's series merged, so one scrape counts the work
of all of them:

- counters, histograms and summaries are added up sample by sample (the same name and
  labels); a bucket keeps an exemplar of one of the workers (the latest by timestamp),
  so a slow bucket still links to a trace;
- gauges are added up (runs in flight, runs waiting, queue depths: the process's
  totals), except those that describe one process rather than an amount of work:
  the highest value of ``MAX_GAUGES`` (a lag, a limit of one process) and the
  earliest ``process_start_time_seconds``;
- ``_created`` samples take the earliest; info and state sets the first.

A worker that does not answer in time is left out of that scrape and counted by
``agentwatch_serve_workers_scraped`` beside ``agentwatch_serve_workers``. A worker that
is restarted starts its counters from 0: the merged counter goes down once, which
Prometheus's ``rate()`` reads as a counter reset (the work of the dead worker since
its last scrape is what is lost). Unlike prometheus_client's multiprocess mode, nothing
is dropped: exemplars, custom collectors and gauges of every kind are kept.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from typing import Final

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Exemplar, Sample

from agentwatch.telemetry import Telemetry
from agentwatch.telemetry.names import M_EVENT_LOOP_LAG_MAX, M_RATE_LIMIT
from agentwatch.telemetry.web import render_metrics

OPENMETRICS: Final = "application/openmetrics-text; version=1.0.0"
PEER_TIMEOUT: Final = 2.0
"""How long a scrape waits for a sibling worker's series (seconds)."""

MAX_GAUGES: Final = frozenset({M_EVENT_LOOP_LAG_MAX, M_RATE_LIMIT, "process_max_fds"})
"""Gauges of one process, not amounts of work: the merged value is the highest (a rate
limit: each worker's own bucket's, or the one they share on Redis)."""
MIN_GAUGES: Final = frozenset({"process_start_time_seconds"})

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


class Families(CollectorRegistry):
    """Metric families to render as one registry would (``collect()``)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        super().__init__()
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merge(sources: Iterable[Iterable[Metric]]) -> list[Metric]:
    """The families of every source as one process's: see the module's rules."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[SampleKey, Sample]] = {}
    for families in sources:
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
            samples = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                before = samples.get(key)
                samples[key] = sample if before is None else _combined(family, before, sample)
    for name, family in merged.items():
        family.samples = list(values[name].values())
    return list(merged.values())


def _combined(family: Metric, before: Sample, sample: Sample) -> Sample:
    if sample.name.endswith("_created") or sample.name in MIN_GAUGES:
        value = min(before.value, sample.value)
    elif family.type in ("info", "stateset", "unknown"):
        value = before.value
    elif family.type == "gauge" and family.name in MAX_GAUGES:
        value = max(before.value, sample.value)
    else:
        value = before.value + sample.value
    exemplar = before.exemplar
    if sample.exemplar is not None and (
        exemplar is None or _when(sample.exemplar) >= _when(exemplar)
    ):
        exemplar = sample.exemplar
    return before._replace(value=value, exemplar=exemplar)


def _when(exemplar: Exemplar) -> float:
    return float(exemplar.timestamp) if exemplar.timestamp is not None else 0.0


def peer_path(directory: str, index: int) -> str:
    """Where worker ``index`` serves its own series."""
    return os.path.join(directory, f"{index}.sock")


def ready_path(directory: str, index: int) -> str:
    """Made by worker ``index`` once it listens on the public port."""
    return os.path.join(directory, f"{index}.ready")


async def _peer_text(directory: str, index: int) -> str | None:
    """A sibling's series in OpenMetrics, None when it does not answer (the caller
    bounds the wait)."""
    connector = aiohttp.UnixConnector(path=peer_path(directory, index))
    try:
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get("http://worker/metrics", headers={"Accept": OPENMETRICS}) as response,
        ):
            if response.status != 200:
                return None
            return await response.text()
    except (aiohttp.ClientError, OSError, ValueError):
        return None


async def _within(seconds: float, text: Awaitable[str | None]) -> str | None:
    try:
        async with asyncio.timeout(seconds):
            return await text
    except TimeoutError:
        return None


def federated(
    telemetry: Telemetry, directory: str, index: int, count: int, timeout: float = PEER_TIMEOUT
) -> Callable[[], Awaitable[Families]]:
    """What ``/metrics`` renders in worker ``index`` of ``count``: its own series and
    those of every sibling that answers within ``timeout``."""

    async def gather() -> Families:
        others = [i for i in range(count) if i != index]
        texts = await asyncio.gather(*(_within(timeout, _peer_text(directory, i)) for i in others))
        sources: list[Iterable[Metric]] = [telemetry.registry.collect()]
        answered = 1
        for text in texts:
            if text is None:
                continue
            try:
                sources.append(list(text_string_to_metric_families(text)))  # type: ignore[no-untyped-call]
            except ValueError:  # a sibling cut off mid-answer: left out of this scrape
                continue
            answered += 1
        families = merge(sources)
        families.extend(_workers_gauges(count, answered))
        return Families(families)

    return gather


def _workers_gauges(count: int, answered: int) -> list[Metric]:
    workers = GaugeMetricFamily(
        "agentwatch_serve_workers", "Worker processes serving this port.", value=count
    )
    scraped = GaugeMetricFamily(
        "agentwatch_serve_workers_scraped",
        "Worker processes whose series this scrape includes (the others did not answer).",
        value=answered,
    )
    return [workers, scraped]


def own_metrics_ctx(
    registry: CollectorRegistry, path: str
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context serving this worker's own series on ``path`` while the
    application runs (``serve_own_metrics``)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        runner = await serve_own_metrics(registry, path)
        try:
            yield
        finally:
            await runner.cleanup()

    return ctx


async def serve_own_metrics(registry: CollectorRegistry, path: str) -> web.AppRunner:
    """This worker's own series (OpenMetrics, exemplars kept) on the Unix socket
    ``path``, for its siblings' scrapes. The caller cleans the runner up."""

    async def own(request: web.Request) -> web.Response:
        accept = request.headers.get("Accept", OPENMETRICS)
        loop = asyncio.get_running_loop()
        body, content_type = await loop.run_in_executor(None, render_metrics, registry, accept)
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", own)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    with suppress(FileNotFoundError):
        os.unlink(path)  # a socket left by the worker this one replaces
    await web.UnixSite(runner, path).start()
    return runner
