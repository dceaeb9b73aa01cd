"""observe(): one primitive for async with, coroutine functions and async generators."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, get_current_span
from prometheus_client import CollectorRegistry

from agentwatch.telemetry import Telemetry

METRIC = "agentwatch_operation_duration_seconds"


def count(registry: CollectorRegistry, operation: str, error_type: str = "") -> float | None:
    return registry.get_sample_value(
        f"{METRIC}_count", {"operation": operation, "error_type": error_type}
    )


async def test_async_with_records_span_and_histogram(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    async with telemetry.observe("fetch", url_kind="doc") as invocation:
        assert get_current_span() is invocation.span
    (span,) = exporter.get_finished_spans()
    assert span.name == "fetch"
    assert span.attributes is not None
    assert span.attributes == {"url_kind": "doc"}
    assert span.status.status_code is StatusCode.UNSET
    assert count(registry, "fetch") == 1


async def test_decorated_coroutine_times_the_await_not_the_creation(
    tracer_provider: object, registry: CollectorRegistry
) -> None:
    ticks = iter([10.0, 12.5])
    telemetry = Telemetry(
        tracer_provider=tracer_provider,  # type: ignore[arg-type]
        registry=registry,
        clock=lambda: next(ticks),
    )

    @telemetry.observe("work")
    async def work(x: int) -> int:
        return x * 2

    assert await work(21) == 42
    assert count(registry, "work") == 1
    assert (
        registry.get_sample_value(f"{METRIC}_sum", {"operation": "work", "error_type": ""}) == 2.5
    )


async def test_error_is_reraised_unchanged_and_counted(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    original = KeyError("missing")

    @telemetry.observe("lookup")
    async def lookup() -> None:
        raise original

    with pytest.raises(KeyError) as caught:
        await lookup()
    assert caught.value is original
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "KeyError"
    assert count(registry, "lookup", "KeyError") == 1
    assert count(registry, "lookup") is None


async def test_cancellation_is_recorded_as_cancelled_not_failed(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    started = asyncio.Event()

    @telemetry.observe("slow")
    async def slow() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes is not None
    assert span.attributes["agentwatch.outcome"] == "cancelled"
    assert count(registry, "slow", "cancelled") == 1


async def test_async_generator_span_spans_the_whole_stream_but_is_not_current_across_yield(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    @telemetry.observe("pages")
    async def pages() -> object:
        for i in range(3):
            async with telemetry.observe("page"):
                pass
            yield i

    seen = []
    async for item in pages():  # type: ignore[attr-defined]
        seen.append(item)
        assert not get_current_span().get_span_context().is_valid  # consumer sees no span
        assert exporter.get_finished_spans()[-1].name == "page"  # stream span still open
    assert seen == [0, 1, 2]
    spans = exporter.get_finished_spans()
    outer = spans[-1]
    assert outer.name == "pages"
    children = [s for s in spans if s.name == "page"]
    assert len(children) == 3
    assert all(c.parent is not None and c.parent.span_id == outer.context.span_id for c in children)


async def test_async_generator_closed_early_ends_its_span(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    closed = []

    @telemetry.observe("endless")
    async def endless() -> object:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    stream = endless()
    assert await stream.__anext__() == 0  # type: ignore[attr-defined]
    await stream.aclose()  # type: ignore[attr-defined]
    assert closed == [True]
    assert [s.name for s in exporter.get_finished_spans()] == ["endless"]
    assert count(registry, "endless") == 1


async def test_exemplar_carries_the_span_trace_id(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    async with telemetry.observe("traced"):
        pass
    (span,) = exporter.get_finished_spans()
    exemplars = [
        s.exemplar
        for metric in registry.collect()
        for s in metric.samples
        if s.name == f"{METRIC}_bucket" and s.exemplar is not None
    ]
    assert [e.labels["trace_id"] for e in exemplars] == [format(span.context.trace_id, "032x")]


async def test_concurrent_observations_keep_their_own_parents(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    async def one(i: int) -> None:
        async with telemetry.observe("run", index=i):
            await asyncio.sleep(0)
            async with telemetry.observe("step", index=i):
                await asyncio.sleep(0)

    await asyncio.gather(*(one(i) for i in range(20)))
    spans = exporter.get_finished_spans()
    runs = {s.context.span_id: s for s in spans if s.name == "run"}
    steps = [s for s in spans if s.name == "step"]
    assert len(runs) == 20
    assert len(steps) == 20
    for step in steps:
        assert step.parent is not None
        parent = runs[step.parent.span_id]
        assert parent.attributes is not None
        assert step.attributes is not None
        assert parent.attributes["index"] == step.attributes["index"]
        assert parent.context.trace_id == step.context.trace_id
    assert len({s.context.trace_id for s in runs.values()}) == 20


async def test_async_generator_never_iterated_opens_no_span(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    @telemetry.observe("lazy")
    async def lazy() -> object:
        yield 1

    stream = lazy()
    assert inspect.isasyncgen(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert exporter.get_finished_spans() == ()


def test_decorating_a_sync_function_is_refused(telemetry: Telemetry) -> None:
    def plain() -> None:
        pass

    with pytest.raises(TypeError, match="async"):
        telemetry.observe("plain")(plain)


async def test_error_type_label_is_bounded(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    for i in range(200):
        kind = type(f"Error{i}", (Exception,), {})
        with pytest.raises(kind):
            async with telemetry.observe("flaky"):
                raise kind()
    series = [s for m in registry.collect() for s in m.samples if s.name == f"{METRIC}_count"]
    assert len(series) == 65  # 64 distinct error types, then _OTHER
    assert count(registry, "flaky", "_OTHER") == 136
