"""Settings from the OTEL_* environment, and closed label sets."""

from __future__ import annotations

import pytest

from agentwatch.telemetry import BoundedLabel, ConfigurationError, TelemetrySettings


def test_defaults() -> None:
    s = TelemetrySettings.from_env({})
    assert (s.sdk_disabled, s.otlp_protocol) == (False, "http/protobuf")
    assert s.capture_content == "none"
    assert s.shutdown_timeout == 5.0


@pytest.mark.parametrize(
    ("env", "exporter"),
    [
        ({}, "none"),  # no endpoint, no exporter chosen: nothing to retry against
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),  # the default endpoint, on request
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318"}, "none"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
    ],
)
def test_one_export_policy_from_the_environment(env: dict[str, str], exporter: str) -> None:
    settings = TelemetrySettings.from_env(env)
    assert settings.traces_exporter == exporter
    statement = settings.describe_export()
    assert ("not exported" in statement) == (exporter == "none")
    if not env:
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" in statement  # says how to turn it on


def test_every_capture_mode_behaves_as_it_is_named() -> None:
    """agentwatch emits no GenAI log events: content goes on spans or nowhere, and no
    two modes that behave alike keep different names."""
    modes = {
        raw: TelemetrySettings.from_env(
            {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": raw}
        ).capture_content
        for raw in ("", "false", "NO_CONTENT", "true", "SPAN_ONLY", "SPAN_AND_EVENT", "EVENT_ONLY")
    }
    assert modes == {
        "": "none",
        "false": "none",
        "NO_CONTENT": "none",
        "true": "span",
        "SPAN_ONLY": "span",
        "SPAN_AND_EVENT": "span",
        "EVENT_ONLY": "none",
    }


def test_shutdown_timeout_is_read() -> None:
    env = {"AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT": "0.5"}
    assert TelemetrySettings.from_env(env).shutdown_timeout == 0.5


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
    assert s.capture_content == "span"
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
    label = BoundedLabel({"calculator", "search"})  # limit 0: a strict allowlist
    assert label("search") == "search"
    assert label("rm -rf /") == "_OTHER"
    label.declare(["weather"])
    assert label("weather") == "weather"
    assert label("rm -rf /") == "_OTHER"


def test_declaring_only_adds_and_never_folds_first_seen_values_away() -> None:
    label = BoundedLabel(limit=2)
    assert [label(v) for v in ("mine", "yours")] == ["mine", "yours"]
    label.declare(["agent_a"])  # what an Agent's constructor does
    assert label("mine") == "mine"  # admitted before: stays
    assert label("agent_a") == "agent_a"
    label.declare(["agent_b", "agent_c"])
    assert label("later") == "_OTHER"  # the room for undeclared values is used up...
    label.declare(["later"])
    assert label("later") == "later"  # ...but a later agent's names always pass
    assert label("agent_b") == "agent_b"
    assert len({label(f"junk-{i}") for i in range(10_000)}) == 1


def test_declared_values_take_no_room_from_the_others() -> None:
    label = BoundedLabel(limit=2)
    label.declare(["a", "b", "c"])
    assert [label(v) for v in ("x", "y", "z", "a")] == ["x", "y", "_OTHER", "a"]


def test_open_label_admits_a_bounded_number_of_values() -> None:
    label = BoundedLabel(limit=3)
    assert [label(v) for v in "abcde"] == ["a", "b", "c", "_OTHER", "_OTHER"]
    assert label("a") == "a"  # admitted values stay admitted
    assert len({label(str(i)) for i in range(10_000)}) == 1
