"""Fixture chain for every test: exporter -> tracer provider -> telemetry, fresh registry."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.telemetry import Telemetry

if TYPE_CHECKING:
    from tests.redis_helpers import RedisServer


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def telemetry(tracer_provider: TracerProvider, registry: CollectorRegistry) -> Telemetry:
    return Telemetry(tracer_provider=tracer_provider, registry=registry)


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run `make test`, which installs Debian's prometheus")
    return path


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[None]:
    """Fail any test in which agentwatch's code blocks the event loop (file or socket
    I/O, sleeps, locks). Third-party start-up called from the tests themselves (an
    openai client reading its certificates) is theirs, not ours."""
    from blockbuster import blockbuster_ctx

    import agentwatch.runtime
    import agentwatch.telemetry

    with blockbuster_ctx([agentwatch.runtime, agentwatch.telemetry]):
        yield


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on an ephemeral loopback port, persistence off."""
    from tests.redis_helpers import redis_server as start_redis

    with start_redis() as server:
        yield server
