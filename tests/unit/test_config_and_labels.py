"""Settings from the OTEL_* environment, and closed label sets."""

from __future__ import annotations

import pytest

from agentwatch.telemetry import BoundedLabel, ConfigurationError, TelemetrySettings


def test_defaults() -> None:
    s = TelemetrySettings.from_env({})
    assert (s.sdk_disabled, s.traces_exporter, s.otlp_protocol) == (False, "otlp", "http/protobuf")
    assert s.capture_content == "none"


def test_standard_variables_are_read() -> None:
    s = TelemetrySettings.from_env(
        {
            "OTEL_SDK_DISABLED": "TRUE",
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_BSP_MAX_QUEUE_SIZE": "64",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_AND_EVENT",
        }
    )
    assert s.sdk_disabled
    assert s.traces_exporter == "console"
    assert s.otlp_protocol == "grpc"
    assert s.max_queue_size == 64
    assert s.capture_content == "span_and_event"
    assert (
        TelemetrySettings.from_env(
            {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
        ).capture_content
        == "span"
    )


def test_a_small_queue_caps_the_export_batch() -> None:
    settings = TelemetrySettings.from_env({"OTEL_BSP_MAX_QUEUE_SIZE": "64"})
    assert settings.max_export_batch_size == 64


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "many"}, "whole number"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "0"}, "at least 1"),
        ({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "yes"}, "SPAN_ONLY"),
    ],
)
def test_bad_values_say_what_to_do(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TelemetrySettings.from_env(env)


def test_allowlist_maps_unknown_values_to_other() -> None:
    label = BoundedLabel({"calculator", "search"})
    assert label("search") == "search"
    assert label("rm -rf /") == "_OTHER"
    label.allow(["weather"])
    assert label("weather") == "weather"


def test_open_label_admits_a_bounded_number_of_values() -> None:
    label = BoundedLabel(limit=3)
    assert [label(v) for v in "abcde"] == ["a", "b", "c", "_OTHER", "_OTHER"]
    assert label("a") == "a"  # admitted values stay admitted
    assert len({label(str(i)) for i in range(10_000)}) == 1
