"""Telemetry settings, read from the standard OpenTelemetry environment variables.

The SDK itself reads the rest of the OTEL_* variables it documents (resource
attributes, sampler, OTLP endpoint, headers, timeout, batch processor sizes); this
object holds the choices agentwatch makes on top of them:

- export policy, the same for every command and for ``setup_telemetry()``: spans are
  exported when OTEL_TRACES_EXPORTER says so (``otlp``, ``console``), or, when it is
  unset, when an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT or
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). Neither set: spans stay in-process (they still
  give the exemplars) instead of retrying a collector that is not there.
- message content (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT): agentwatch
  puts content on spans and emits no GenAI log events, so ``SPAN_ONLY``,
  ``SPAN_AND_EVENT`` and ``true`` all mean "on spans", and ``EVENT_ONLY`` captures
  nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from .errors import ConfigurationError
from .prices import AGENTWATCH_PRICES_FILE

OTEL_SDK_DISABLED: Final = "OTEL_SDK_DISABLED"
OTEL_SERVICE_NAME: Final = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES: Final = "OTEL_RESOURCE_ATTRIBUTES"
OTEL_TRACES_EXPORTER: Final = "OTEL_TRACES_EXPORTER"
OTEL_EXPORTER_OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_EXPORTER_OTLP_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
OTEL_BSP_MAX_QUEUE_SIZE: Final = "OTEL_BSP_MAX_QUEUE_SIZE"
OTEL_BSP_MAX_EXPORT_BATCH_SIZE: Final = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: Final = (
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
)
AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT: Final = "AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT"
# The SDK's span limits (opentelemetry.sdk.environment_variables): read here, with the
# rest, so that ``from_env(env)`` decides them (setup.span_limits), not os.environ.
OTEL_ATTRIBUTE_COUNT_LIMIT: Final = "OTEL_ATTRIBUTE_COUNT_LIMIT"
OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: Final = "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"
OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: Final = "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"
OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT: Final = "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT"
OTEL_SPAN_EVENT_COUNT_LIMIT: Final = "OTEL_SPAN_EVENT_COUNT_LIMIT"
OTEL_SPAN_LINK_COUNT_LIMIT: Final = "OTEL_SPAN_LINK_COUNT_LIMIT"
OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT: Final = "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT"
OTEL_LINK_ATTRIBUTE_COUNT_LIMIT: Final = "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT"
SPAN_LIMIT_VARIABLES: Final = (
    OTEL_ATTRIBUTE_COUNT_LIMIT,
    OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT,
    OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT,
    OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT,
    OTEL_SPAN_EVENT_COUNT_LIMIT,
    OTEL_SPAN_LINK_COUNT_LIMIT,
    OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT,
    OTEL_LINK_ATTRIBUTE_COUNT_LIMIT,
)

DEFAULT_SERVICE_NAME: Final = "agentwatch"
DEFAULT_SHUTDOWN_TIMEOUT: Final = 5.0

TracesExporter = Literal["otlp", "console", "none"]
OtlpProtocol = Literal["http/protobuf", "grpc"]
ContentCapture = Literal["none", "span"]

_EXPORTERS: Final[tuple[TracesExporter, ...]] = ("otlp", "console", "none")
_PROTOCOLS: Final[tuple[OtlpProtocol, ...]] = ("http/protobuf", "grpc")
_CAPTURE: Final[Mapping[str, ContentCapture]] = {
    "": "none",
    "false": "none",
    "no_content": "none",
    "none": "none",
    "true": "span",
    "span_only": "span",
    "span_and_event": "span",  # no GenAI log events are emitted: on spans only
    "event_only": "none",  # and so nothing is captured
}


def content_capture(environ: Mapping[str, str]) -> ContentCapture:
    """``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` of ``environ``: whether
    prompts and outputs go on spans (a value it does not know: ``ConfigurationError``)."""
    raw = environ.get(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, "").strip().lower()
    if raw not in _CAPTURE:
        raise ConfigurationError(
            f"{OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT}={raw!r}: use "
            "SPAN_ONLY, SPAN_AND_EVENT, NO_CONTENT (or true/false)"
        )
    return _CAPTURE[raw]


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    sdk_disabled: bool = False
    traces_exporter: TracesExporter = "otlp"
    otlp_protocol: OtlpProtocol = "http/protobuf"
    max_queue_size: int = 2048
    max_export_batch_size: int = 512  # never more than the queue holds (the SDK refuses)
    capture_content: ContentCapture = "none"
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    # The OTLP endpoint configured (for the start-up statement; the exporter reads it).
    otlp_endpoint: str = ""
    # True when OTEL_TRACES_EXPORTER was unset and the export policy chose the exporter.
    exporter_by_policy: bool = False
    # The span limit variables that were set (SPAN_LIMIT_VARIABLES): name and value, a
    # whole number >= 0 or "unset" (no limit), as the SDK reads them.
    span_limits_env: tuple[tuple[str, str], ...] = ()
    # AGENTWATCH_PRICES_FILE: the user's prices over the bundled table ("": none);
    # read and checked when the telemetry is built (prices.read_price_file).
    prices_file: str = ""

    def __post_init__(self) -> None:
        if self.traces_exporter not in _EXPORTERS:
            raise ConfigurationError(
                f"{OTEL_TRACES_EXPORTER}={self.traces_exporter!r}: use one of {_EXPORTERS}"
            )
        if self.otlp_protocol not in _PROTOCOLS:
            raise ConfigurationError(
                f"{OTEL_EXPORTER_OTLP_PROTOCOL}={self.otlp_protocol!r}: use one of {_PROTOCOLS}"
            )
        if self.max_queue_size < 1:
            raise ConfigurationError(f"{OTEL_BSP_MAX_QUEUE_SIZE} must be at least 1")
        if self.max_export_batch_size < 1:
            raise ConfigurationError(f"{OTEL_BSP_MAX_EXPORT_BATCH_SIZE} must be at least 1")
        if self.max_export_batch_size > self.max_queue_size:
            object.__setattr__(self, "max_export_batch_size", self.max_queue_size)
        if not self.shutdown_timeout > 0:
            raise ConfigurationError(f"{AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT} must be positive")
        for name, value in self.span_limits_env:
            if name not in SPAN_LIMIT_VARIABLES:
                raise ConfigurationError(f"{name} is not a span limit: use {SPAN_LIMIT_VARIABLES}")
            if value.lower() != "unset" and not (value.isascii() and value.isdigit()):
                raise ConfigurationError(
                    f"{name}={value!r}: use a whole number >= 0, or 'unset' for no limit"
                )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TelemetrySettings:
        e = os.environ if env is None else env
        endpoint = (
            e.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or e.get(OTEL_EXPORTER_OTLP_ENDPOINT) or ""
        ).strip()
        chosen = e.get(OTEL_TRACES_EXPORTER, "").strip().lower()
        exporter = chosen or ("otlp" if endpoint else "none")  # the export policy
        protocol = (
            e.get(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) or e.get(OTEL_EXPORTER_OTLP_PROTOCOL) or ""
        ).strip().lower() or "http/protobuf"
        return cls(
            sdk_disabled=e.get(OTEL_SDK_DISABLED, "").strip().lower() == "true",
            traces_exporter=exporter,  # type: ignore[arg-type]  # checked in __post_init__
            otlp_protocol=protocol,  # type: ignore[arg-type]
            max_queue_size=_int(e, OTEL_BSP_MAX_QUEUE_SIZE, 2048),
            max_export_batch_size=_int(e, OTEL_BSP_MAX_EXPORT_BATCH_SIZE, 512),
            capture_content=content_capture(e),
            shutdown_timeout=_float(
                e, AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT
            ),
            otlp_endpoint=endpoint,
            exporter_by_policy=not chosen,
            span_limits_env=tuple(
                (name, e[name].strip()) for name in SPAN_LIMIT_VARIABLES if e.get(name, "").strip()
            ),
            prices_file=e.get(AGENTWATCH_PRICES_FILE, "").strip(),
        )

    def describe_export(self) -> str:
        """One line saying where spans go, stated once at start-up."""
        if self.sdk_disabled:
            return f"tracing is off ({OTEL_SDK_DISABLED}=true)"
        if self.traces_exporter == "console":
            return f"spans are printed to stdout ({OTEL_TRACES_EXPORTER}=console)"
        if self.traces_exporter == "none":
            if self.exporter_by_policy:
                return (
                    f"spans are not exported (no {OTEL_EXPORTER_OTLP_ENDPOINT} set; "
                    f"set it, or {OTEL_TRACES_EXPORTER}=otlp, to export them)"
                )
            return f"spans are not exported ({OTEL_TRACES_EXPORTER}=none)"
        where = self.otlp_endpoint or "the default OTLP endpoint"
        return f"spans are exported over OTLP ({self.otlp_protocol}) to {where}"


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ConfigurationError(f"{key}={raw!r} is not a whole number") from None


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ConfigurationError(f"{key}={raw!r} is not a number") from None
