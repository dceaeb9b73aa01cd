"""``setup_telemetry()``: the one composition root that wires the OpenTelemetry SDK.

Configured by the standard OTEL_* environment variables (see ``settings``, which also
holds the export policy: no OTLP endpoint and no OTEL_TRACES_EXPORTER, no export).
Idempotent: the second call returns the first call's ``Telemetry``, and where spans go
is stated once, in the ``agentwatch.telemetry`` log. Spans go through a bounded batch
processor; what the backend does not take is counted in
``agentwatch_telemetry_spans_dropped_total`` and the program runs on.

Spans are bounded too: an attribute value is cut at ``DEFAULT_ATTRIBUTE_LENGTH``
characters unless OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT or
OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT says otherwise (the SDK's own default is no
limit: one 900 KB attribute on 100 spans made an export request the backend refused,
and the spans of other runs in it were lost). Counts keep the SDK's defaults (128
attributes, events and links per span; OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT and friends).
Every limit is read from ``TelemetrySettings`` (``from_env(env)``), not os.environ.
Cutting a value is the limit working, not a fault: the SDK's warning for each value cut
("String attribute value exceeds max length", once per value, e.g. the stack trace of
every failed run) is dropped by a filter on its logger, installed by ``build_telemetry``.

Joining the application's own OpenTelemetry setup: a tracer provider agentwatch did not
build (given as ``tracer_provider=``, or the global one the application or
``opentelemetry-instrument`` installed first) is used as it is. Its processors,
exporters, sampler, resource and limits are the application's; agentwatch adds no
exporter to it (the OTEL_* variables are the application's setup's to honour, and
adding one would export every span twice) unless asked with ``span_exporter=``, never
installs it as the global provider, never replaces it and never shuts it down.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Final

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from prometheus_client import CollectorRegistry

from ._export import CountingBatchSpanProcessor
from .catalog import MetricCatalog
from .core import Telemetry
from .errors import ConfigurationError
from .prices import PriceTable
from .settings import (
    DEFAULT_SERVICE_NAME,
    OTEL_ATTRIBUTE_COUNT_LIMIT,
    OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT,
    OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT,
    OTEL_LINK_ATTRIBUTE_COUNT_LIMIT,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SERVICE_NAME,
    OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT,
    OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT,
    OTEL_SPAN_EVENT_COUNT_LIMIT,
    OTEL_SPAN_LINK_COUNT_LIMIT,
    ContentCapture,
    TelemetrySettings,
    content_capture,
)

_logger = logging.getLogger("agentwatch.telemetry")
DEFAULT_ATTRIBUTE_LENGTH: Final = 8192  # characters of one attribute value
SDK_DEFAULT_COUNT: Final = 128  # the SDK's default for each count limit (the spec's)
_lock = threading.Lock()
_telemetry: Telemetry | None = None
_configured = False  # False while _telemetry is get_telemetry()'s unconfigured default


def setup_telemetry(
    settings: TelemetrySettings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    span_exporter: SpanExporter | None = None,
    set_global: bool = True,
    tracer_provider: trace.TracerProvider | None = None,
) -> Telemetry:
    """Wire tracing and metrics once for this process and return the ``Telemetry``.

    ``tracer_provider``: the application's own provider, used as it is (see the module
    docstring). Without it, the global provider already installed (by the application,
    or ``opentelemetry-instrument``) is used the same way; with none installed,
    agentwatch builds its own from the OTEL_* variables and, with ``set_global``,
    installs it so that other instrumentation in the process joins the same traces.
    ``span_exporter`` replaces the exporter OTEL_TRACES_EXPORTER would choose (on a
    provider agentwatch did not build: adds its counting batch processor with it).
    The first call decides; later calls return its ``Telemetry``.
    """
    global _telemetry, _configured
    with _lock:
        if _telemetry is not None and _configured:
            if tracer_provider is not None and tracer_provider is not _telemetry.tracer_provider:
                _logger.warning(
                    "agentwatch: telemetry is already set up; tracer_provider= is ignored"
                )
            return _telemetry
        # Code that recorded before setup used a default Telemetry on the default
        # registry: keep its metric families (they cannot be registered twice).
        catalog = _telemetry.metrics if _telemetry is not None and registry is None else None
        s = settings if settings is not None else TelemetrySettings.from_env()
        joined = tracer_provider if tracer_provider is not None else _installed_provider()
        telemetry = build_telemetry(
            s,
            registry=registry,
            span_exporter=span_exporter,
            catalog=catalog,
            tracer_provider=joined,
        )
        if span_exporter is None:
            _state_where_spans_go(s, joined, given=tracer_provider is not None)
        if set_global and joined is None and telemetry.tracer_provider is not None:
            trace.set_tracer_provider(telemetry.tracer_provider)
        _telemetry, _configured = telemetry, True
        return telemetry


def _installed_provider() -> trace.TracerProvider | None:
    """The global tracer provider, when one is installed (not the API's placeholder)."""
    current = trace.get_tracer_provider()
    return None if isinstance(current, trace.ProxyTracerProvider) else current


def _state_where_spans_go(
    s: TelemetrySettings, joined: trace.TracerProvider | None, *, given: bool
) -> None:
    """Once per process. Off by policy is said where a user sees it (stderr when logging
    is not configured); a configured choice, or the application's provider, in the log."""
    if joined is not None and not s.sdk_disabled:
        whose = "given" if given else "already installed"
        _logger.info(
            "agentwatch: spans go to the tracer provider %s "
            "(its own processors and exporters; agentwatch adds none)",
            whose,
        )
        return
    level = (
        logging.WARNING if s.exporter_by_policy and s.traces_exporter == "none" else logging.INFO
    )
    _logger.log(level, "agentwatch: %s", s.describe_export())


def get_telemetry() -> Telemetry:
    """The process's telemetry; without ``setup_telemetry()``, metrics on the default
    registry and spans through whatever global tracer provider is installed, content
    captured as ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` says (the
    zero-code way: ``opentelemetry-instrument`` sets up tracing, not agentwatch)."""
    global _telemetry
    if _telemetry is None:
        with _lock:
            if _telemetry is None:
                _telemetry = Telemetry(capture_content=_content_capture())
    return _telemetry


def _content_capture() -> ContentCapture:
    """The capture setting, or none (logged) when it is not one we know: the first
    call this runs in is a user's model call, which telemetry must never fail."""
    try:
        return content_capture(os.environ)
    except ConfigurationError as exc:
        _logger.warning("agentwatch: %s; content is not captured", exc)
        return "none"


def check_telemetry_settings() -> None:
    """Refuse what ``setup_telemetry()`` would refuse (``ConfigurationError``: a bad
    variable, a bad ``AGENTWATCH_PRICES_FILE``), setting nothing up: a parent process
    checks once for the processes it starts."""
    PriceTable.from_file(TelemetrySettings.from_env().prices_file)


def build_telemetry(
    settings: TelemetrySettings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    span_exporter: SpanExporter | None = None,
    catalog: MetricCatalog | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> Telemetry:
    """A configured ``Telemetry`` that touches no globals (what setup_telemetry installs).

    Without ``tracer_provider`` it builds and owns one from the settings (exporter by the
    export policy, span limits, resource) and shuts it down with the telemetry. With one,
    it records through it as it is: only ``span_exporter`` adds to it (a counting batch
    processor, shut down with the telemetry; the provider stays running).

    Start-up work blocks briefly (resource detection joins a thread pool): from inside a
    running event loop call it, or ``setup_telemetry()``, through ``asyncio.to_thread``.
    """
    s = settings if settings is not None else TelemetrySettings.from_env()
    prices = PriceTable.from_file(s.prices_file)  # a bad price file stops the start here
    if s.sdk_disabled:
        return Telemetry(
            tracer_provider=trace.NoOpTracerProvider(),
            registry=registry,
            capture_content=s.capture_content,
            catalog=catalog,
            prices=prices,
        )
    owned = tracer_provider is None
    if tracer_provider is None:
        quiet_truncation_warnings()
        provider: trace.TracerProvider = TracerProvider(
            resource=_resource(), span_limits=span_limits(s)
        )
        exporter = span_exporter if span_exporter is not None else _exporter(s)
    else:
        provider, exporter = tracer_provider, span_exporter
    processor: CountingBatchSpanProcessor | None = None
    holder: list[Telemetry] = []

    def on_drop(reason: str, count: int) -> None:
        if holder:
            holder[0].count_dropped_spans(reason, count)

    if exporter is not None:
        if not isinstance(provider, TracerProvider):
            raise ConfigurationError(
                f"span_exporter= needs an SDK TracerProvider to add its processor to, "
                f"not {type(provider).__name__}"
            )
        processor = CountingBatchSpanProcessor(
            exporter,
            on_drop,
            max_queue_size=s.max_queue_size,
            max_export_batch_size=s.max_export_batch_size,
        )
        provider.add_span_processor(processor)

    def shutdown(timeout: float) -> None:
        if processor is not None:
            processor.shutdown_within(int(timeout * 1000))  # the drop count is final after
        if owned and isinstance(provider, TracerProvider):
            provider.shutdown()

    telemetry = Telemetry(
        tracer_provider=provider,
        registry=registry,
        capture_content=s.capture_content,
        on_shutdown=shutdown,
        catalog=catalog,
        shutdown_timeout=s.shutdown_timeout,
        # A provider of the application's: its own exporters decide where spans go.
        exports_spans=exporter is not None or not owned,
        prices=prices,
    )
    holder.append(telemetry)
    return telemetry


class _NoTruncationWarning(logging.Filter):
    """Drops the SDK's warning that an attribute value was cut to the length limit."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TRUNCATION_WARNING)


_TRUNCATION_WARNING: Final = "String attribute value exceeds max length"
_ATTRIBUTES_LOGGER: Final = "opentelemetry.attributes"  # where the SDK says it


def quiet_truncation_warnings() -> None:
    """Install the filter for the SDK's "value exceeds max length" warning (once)."""
    logger = logging.getLogger(_ATTRIBUTES_LOGGER)
    if not any(isinstance(f, _NoTruncationWarning) for f in logger.filters):
        logger.addFilter(_NoTruncationWarning())


def span_limits(settings: TelemetrySettings | None = None) -> SpanLimits:
    """The SDK's limits from the settings' OTEL_*_LIMIT variables (``from_env(env)``
    decides, never os.environ), with the SDK's precedence and defaults, and
    DEFAULT_ATTRIBUTE_LENGTH for an attribute value's length when neither length
    variable is set. Every limit is passed explicitly, so the SDK reads no variable."""
    s = settings if settings is not None else TelemetrySettings.from_env()
    given: dict[str, int | None] = {
        name: None if value.lower() == "unset" else int(value) for name, value in s.span_limits_env
    }

    def limit(value: int | None) -> int:
        return SpanLimits.UNSET if value is None else value

    def count(name: str, default: int) -> int:
        return limit(given[name]) if name in given else default

    shared = given.get(OTEL_ATTRIBUTE_COUNT_LIMIT)
    attributes = SDK_DEFAULT_COUNT if shared is None else shared
    if OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT in given:
        length = given[OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT]
    elif OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT in given:
        length = None  # the span's own variable decides
    else:
        length = DEFAULT_ATTRIBUTE_LENGTH
    span_length = given.get(OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT, length)
    return SpanLimits(
        max_attributes=attributes,
        max_events=count(OTEL_SPAN_EVENT_COUNT_LIMIT, SDK_DEFAULT_COUNT),
        max_links=count(OTEL_SPAN_LINK_COUNT_LIMIT, SDK_DEFAULT_COUNT),
        max_span_attributes=count(OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT, attributes),
        max_event_attributes=count(OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT, attributes),
        max_link_attributes=count(OTEL_LINK_ATTRIBUTE_COUNT_LIMIT, attributes),
        max_attribute_length=limit(length),
        max_span_attribute_length=limit(span_length),
    )


def _resource() -> Resource:
    named = OTEL_SERVICE_NAME in os.environ or "service.name=" in os.environ.get(
        OTEL_RESOURCE_ATTRIBUTES, ""
    )
    return Resource.create({} if named else {SERVICE_NAME: DEFAULT_SERVICE_NAME})


def _exporter(settings: TelemetrySettings) -> SpanExporter | None:
    if settings.traces_exporter == "none":
        return None
    if settings.traces_exporter == "console":
        return ConsoleSpanExporter()
    if settings.otlp_protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError:
            raise ConfigurationError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC exporter: "
                "pip install 'agentwatch[grpc]' (or use http/protobuf)"
            ) from None
        grpc_exporter: SpanExporter = GrpcSpanExporter()
        return grpc_exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()
