"""Real peers on loopback: an OTLP/HTTP receiver that decodes what the exporter sends."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from agentwatch.runtime.langchain.instrumentor import AgentwatchInstrumentor
from agentwatch.telemetry import Telemetry
from tests.helpers import free_port


@dataclass
class OtlpReceiver:
    """Collects every span of every ExportTraceServiceRequest it is sent."""

    url: str = ""
    requests: int = 0
    spans: list[Span] = field(default_factory=list)
    resources: list[dict[str, str]] = field(default_factory=list)

    def span_named(self, name: str) -> Span:
        matches = [s for s in self.spans if s.name == name]
        assert len(matches) == 1, f"{len(matches)} spans named {name!r}"
        return matches[0]


def attributes(span: Span) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in span.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = getattr(value, kind) if kind else None
    return out


@pytest.fixture
async def otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    receiver = OtlpReceiver()

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        encoding = request.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        receiver.requests += 1
        for resource_spans in message.resource_spans:
            receiver.resources.append(
                {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
            )
            for scope_spans in resource_spans.scope_spans:
                receiver.spans.extend(scope_spans.spans)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield receiver
    await runner.cleanup()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


@pytest.fixture
def instrumented(telemetry: Telemetry) -> Iterator[AgentwatchInstrumentor]:
    """The instrumentor installed, recording into the test's telemetry; removed after."""
    instrumentor = AgentwatchInstrumentor()
    instrumentor.instrument(telemetry=telemetry)
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()
