"""The Redis queue's settings and small rules, without a Redis."""

from __future__ import annotations

import pytest

from agentwatch.runtime.batch.redis_queue import (
    QueueOptions,
    band,
    normal_record,
    safe_url,
)
from agentwatch.runtime.settings import RuntimeSettings, SettingError


def test_queue_options_from_the_environment() -> None:
    assert QueueOptions.from_env({}) == QueueOptions(30.0, 5)
    options = QueueOptions.from_env(
        {"AGENTWATCH_REDIS_VISIBILITY_TIMEOUT": "2.5", "AGENTWATCH_REDIS_MAX_DELIVERIES": "3"}
    )
    assert options == QueueOptions(2.5, 3)
    with pytest.raises(ValueError, match="AGENTWATCH_REDIS_VISIBILITY_TIMEOUT must be a number"):
        QueueOptions.from_env({"AGENTWATCH_REDIS_VISIBILITY_TIMEOUT": "soon"})
    with pytest.raises(ValueError, match="AGENTWATCH_REDIS_MAX_DELIVERIES must be at least 1"):
        QueueOptions.from_env({"AGENTWATCH_REDIS_MAX_DELIVERIES": "0"})
    with pytest.raises(ValueError, match="AGENTWATCH_REDIS_VISIBILITY_TIMEOUT must be positive"):
        QueueOptions(visibility_timeout=0)


def test_priorities_go_to_ten_bands_lower_first() -> None:
    assert [band(p) for p in (-3, 0, 5, 9, 10, 1000)] == [0, 0, 5, 9, 9, 9]


def test_a_url_is_logged_without_its_password() -> None:
    assert safe_url("redis://:s3cret@db:6379/0") == "redis://***@db:6379/0"
    assert safe_url("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379"


def test_a_record_from_redis_has_the_fields_of_a_task_record_in_order() -> None:
    record = normal_record('{"error":null,"id":"a","status":"completed","result":1,"x":2}')
    assert list(record) == ["id", "status", "priority", "result", "error", "cost_usd", "x"]


def test_the_service_settings_for_batches_on_redis() -> None:
    settings = RuntimeSettings.from_env(
        {"AGENTWATCH_REDIS_URL": "redis://h:6379/1", "AGENTWATCH_REDIS_CONCURRENCY": "0"}
    )
    assert (settings.redis_url, settings.redis_concurrency) == ("redis://h:6379/1", 0)
    assert "redis://h" not in repr(settings)  # a URL may hold a password
    with pytest.raises(SettingError, match="AGENTWATCH_REDIS_URL must be a redis://"):
        RuntimeSettings.from_env({"AGENTWATCH_REDIS_URL": "http://h"})
    with pytest.raises(SettingError, match="AGENTWATCH_REDIS_CONCURRENCY must not be negative"):
        RuntimeSettings.from_env({"AGENTWATCH_REDIS_CONCURRENCY": "-1"})
