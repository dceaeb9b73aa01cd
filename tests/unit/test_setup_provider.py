"""setup_telemetry() joins the application's OpenTelemetry setup: a provider it is given,
or the global one already installed (by the application or `opentelemetry-instrument`),
is used as it is — never overridden, never shut down, no exporter added unasked.

These tests call setup_telemetry() in this process: ``fresh_globals`` resets
OpenTelemetry's set-once global provider (as opentelemetry-python's own
``reset_trace_globals`` does) and agentwatch's process telemetry, and monkeypatch
restores both afterwards."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import prometheus_client.metrics
import pytest
from aiohttp.test_utils import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from prometheus_client import CollectorRegistry

import agentwatch.telemetry.setup as setup_state
from agentwatch.telemetry import (
    ConfigurationError,
    Telemetry,
    TelemetrySettings,
    build_telemetry,
    create_metrics_app,
    get_telemetry,
    setup_telemetry,
)

OVERRIDE_WARNING = "Overriding of current TracerProvider is not allowed"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
NO_EXPORT = TelemetrySettings(traces_exporter="none", exporter_by_policy=True)
ClientFactory = object


class UsersProvider(TracerProvider):
    """The application's own provider, with its own exporter; remembers what is done to it."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        super().__init__(shutdown_on_exit=False)
        self.processors: list[SpanProcessor] = []
        self.shut_down = False
        self.add_span_processor(SimpleSpanProcessor(exporter))

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        self.processors.append(span_processor)
        super().add_span_processor(span_processor)

    def shutdown(self) -> None:
        self.shut_down = True
        super().shutdown()


@pytest.fixture
def fresh_globals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(trace, "_PROXY_TRACER_PROVIDER", trace.ProxyTracerProvider())
    monkeypatch.setattr(setup_state, "_telemetry", None)
    monkeypatch.setattr(setup_state, "_configured", False)
    yield
    if setup_state._telemetry is not None:
        setup_state._telemetry.shutdown(1.0)


@pytest.fixture
def users_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def users_provider(users_exporter: InMemorySpanExporter) -> Iterator[UsersProvider]:
    provider = UsersProvider(users_exporter)
    yield provider
    provider.shutdown()


def _record_a_tool_call(telemetry: Telemetry) -> None:
    with telemetry.tool_call("lookup"):
        pass


def test_an_installed_global_provider_is_joined_not_overridden(
    fresh_globals: None,
    users_provider: UsersProvider,
    users_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The application (or `opentelemetry-instrument`) installed its provider first:
    setup_telemetry() records into it. It used to build a provider of its own, try to
    install it (OpenTelemetry refuses, with a warning) and send its spans elsewhere."""
    trace.set_tracer_provider(users_provider)
    with caplog.at_level(logging.INFO):
        telemetry = setup_telemetry(NO_EXPORT, registry=CollectorRegistry())
    assert OVERRIDE_WARNING not in caplog.text
    assert trace.get_tracer_provider() is users_provider
    assert telemetry.tracer_provider is users_provider
    _record_a_tool_call(telemetry)
    assert [s.name for s in users_exporter.get_finished_spans()] == ["execute_tool lookup"]
    # Where spans go is said once, and it is the application's provider, not "nowhere".
    said = [r for r in caplog.records if r.name == "agentwatch.telemetry"]
    assert [(r.levelno, r.getMessage()) for r in said] == [
        (
            logging.INFO,
            "agentwatch: spans go to the tracer provider already installed "
            "(its own processors and exporters; agentwatch adds none)",
        )
    ]


def test_a_given_provider_is_used_as_it_is(
    fresh_globals: None,
    users_provider: UsersProvider,
    users_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No exporter added even when the environment chooses one (the application's own
    setup reads the same OTEL_* variables: adding one would export every span twice),
    not installed as the global provider (it is the application's to install), and not
    shut down with agentwatch's telemetry."""
    chosen = TelemetrySettings.from_env({"OTEL_TRACES_EXPORTER": "console"})
    original = list(users_provider.processors)
    telemetry = setup_telemetry(
        chosen, registry=CollectorRegistry(), tracer_provider=users_provider
    )
    assert setup_telemetry() is telemetry is get_telemetry()  # idempotent
    assert telemetry.tracer_provider is users_provider
    assert users_provider.processors == original
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert OVERRIDE_WARNING not in caplog.text
    _record_a_tool_call(telemetry)
    telemetry.shutdown(1.0)
    assert not users_provider.shut_down
    users_provider.get_tracer("app").start_span("after").end()
    names = [s.name for s in users_exporter.get_finished_spans()]
    assert names == ["execute_tool lookup", "after"]


def test_a_span_exporter_asked_for_is_added_beside_the_users_processors(
    users_provider: UsersProvider, users_exporter: InMemorySpanExporter
) -> None:
    """``span_exporter=`` is the one way agentwatch adds to a provider it does not own:
    its counting batch processor with that exporter, shut down with the telemetry (which
    leaves the provider running)."""
    ours = InMemorySpanExporter()
    telemetry = build_telemetry(
        NO_EXPORT,
        registry=CollectorRegistry(),
        span_exporter=ours,
        tracer_provider=users_provider,
    )
    assert len(users_provider.processors) == 2
    _record_a_tool_call(telemetry)
    telemetry.shutdown(1.0)
    assert not users_provider.shut_down
    assert [s.name for s in ours.get_finished_spans()] == ["execute_tool lookup"]
    assert [s.name for s in users_exporter.get_finished_spans()] == ["execute_tool lookup"]


def test_a_span_exporter_needs_a_provider_that_takes_processors() -> None:
    with pytest.raises(ConfigurationError, match="span_exporter"):
        build_telemetry(
            NO_EXPORT,
            registry=CollectorRegistry(),
            span_exporter=InMemorySpanExporter(),
            tracer_provider=trace.NoOpTracerProvider(),
        )


def test_a_later_provider_does_not_replace_the_first_setup(
    fresh_globals: None, users_provider: UsersProvider, caplog: pytest.LogCaptureFixture
) -> None:
    first = setup_telemetry(NO_EXPORT, registry=CollectorRegistry())
    with caplog.at_level(logging.WARNING):
        again = setup_telemetry(tracer_provider=users_provider)
    assert again is first
    assert first.tracer_provider is not users_provider
    assert "already set up" in caplog.text


# -- the `_created` series: one policy, whichever way telemetry is built ----------------


@pytest.fixture
def created_series_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """prometheus_client's process-wide switch as a fresh process has it (on)."""
    monkeypatch.setattr(prometheus_client.metrics, "_use_created", True)


_BUILDERS = {
    "setup_telemetry": lambda registry: setup_telemetry(NO_EXPORT, registry=registry),
    "build_telemetry": lambda registry: build_telemetry(NO_EXPORT, registry=registry),
    "Telemetry": lambda registry: Telemetry(
        tracer_provider=TracerProvider(shutdown_on_exit=False), registry=registry
    ),
}


@pytest.fixture(params=sorted(_BUILDERS))
def built(
    request: pytest.FixtureRequest, fresh_globals: None, created_series_on: None
) -> Telemetry:
    """Telemetry built each way, outside the event loop (start-up work may block)."""
    return _BUILDERS[request.param](CollectorRegistry())


@pytest.mark.parametrize("accept", ["text/plain", OPENMETRICS])
async def test_metrics_have_no_created_series_however_telemetry_is_built(
    built: Telemetry, aiohttp_client: ClientFactory, accept: str
) -> None:
    async with built.observe("work"):
        pass
    built.batches.unstarted()  # a counter too
    client: TestClient = await aiohttp_client(create_metrics_app(built))  # type: ignore[operator]
    response = await client.get("/metrics", headers={"Accept": accept})
    body = await response.text()
    assert "agentwatch_operation_duration_seconds_count" in body
    assert "agentwatch_batch_tasks_total" in body
    assert "_created" not in body
