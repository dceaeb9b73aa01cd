"""Hostile clients against the HTTP service (issue 13): no single request may exhaust,
stall or mislabel it.

Connection-level cases run `agentwatch serve` in its own process (its memory measured
apart from this one's, with the connection limits of runtime/http/serving.py); request-level
cases use the application in-process. While a memory case runs, /healthz keeps
answering within `time_bound(0.25, 2.0)` (strict under `make soak`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.http_writer import StreamWriter
from aiohttp.test_utils import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.runtime.agents.agent import AgentInputError, RunTimeoutError
from agentwatch.runtime.agents.agent_runtime import AgentRuntime
from agentwatch.runtime.builtin_model import BuiltinModelServer, ModelBehavior
from agentwatch.runtime.http import jsonpolicy
from agentwatch.runtime.http.jsonpolicy import MAX_BODY_BYTES_IN_FLIGHT
from agentwatch.runtime.http.serving import (
    HEAD_TIMEOUT,
    KEEPALIVE_TIMEOUT,
    MAX_HEAD_BYTES,
    make_runner,
    start_site,
)
from agentwatch.runtime.service import app as server
from agentwatch.runtime.service.app import MAX_ID_CHARS, RUNTIME_KEY, create_app
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry
from agentwatch.telemetry.setup import DEFAULT_ATTRIBUTE_LENGTH, build_telemetry
from tests.helpers import (
    HealthProbe,
    ServiceProcess,
    http_count,
    rss_kib,
    serve_process,
    time_bound,
    wait_until_ready,
)

Client = Callable[..., Awaitable[TestClient]]
T = TypeVar("T")

# The flood was 400 connections x 126 headers x 8,000 bytes; 126 headers now
# pass the count limit (MAX_HEADERS = 64), so the flood stays just under it and meets
# the limit on the head's total size instead.
HEADER_CONNECTIONS = 400
HEADERS_EACH = 60
HEADER_BYTES = 8000
FLOOD_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
    b"X-Filler-%d: %s\r\n" % (i, b"a" * HEADER_BYTES) for i in range(HEADERS_EACH)
)
RSS_CEILING_MIB = 96  # the service's growth while 400 connections flood it with headers


@pytest.fixture
def service() -> Iterator[ServiceProcess]:
    with serve_process() as running:
        yield running


async def _read_all(reader: asyncio.StreamReader, seconds: float) -> bytes:
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(seconds):
            return await reader.read(-1)
    return b""


async def _flood(port: int, hold: asyncio.Event) -> tuple[str, bytes]:
    """One connection: a request head of 60 x 8,000-byte headers, never finished.
    How it ended: "refused" (the 431 read), "closed" (reset by the server before
    the answer could be read: unsent data makes TCP reset), or "open" (still held)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(FLOOD_HEAD)  # and never the blank line that ends it
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        await hold.wait()
        try:
            async with asyncio.timeout(0.5):
                answer = await reader.read(-1)
        except TimeoutError:
            return "open", b""
        except ConnectionError:
            return "closed", b""
        return ("refused" if b" 431 " in answer.split(b"\r\n", 1)[0] else "closed"), answer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _held_open(
    service: ServiceProcess, connect: Callable[[int, asyncio.Event], Awaitable[T]], count: int
) -> tuple[list[T], float, HealthProbe]:
    """``count`` connections made by ``connect`` held open for 4 s while a probe asks
    /healthz and the service's RSS is sampled: their answers, its growth at the peak
    (MiB), the probe."""
    async with aiohttp.ClientSession() as session:
        await wait_until_ready(session, f"{service.base}/readyz")
    before = peak = rss_kib(service.pid)
    hold = asyncio.Event()
    async with HealthProbe(service.base).running() as probe:
        held = [asyncio.create_task(connect(service.port, hold)) for _ in range(count)]
        for _ in range(40):  # 4 s held open, RSS sampled
            await asyncio.sleep(0.1)
            peak = max(peak, rss_kib(service.pid))
        hold.set()
        answers = await asyncio.gather(*held)
    return list(answers), (peak - before) / 1024, probe


async def test_header_flood_is_refused_within_a_memory_ceiling(service: ServiceProcess) -> None:
    answers, grown_mib, probe = await _held_open(service, _flood, HEADER_CONNECTIONS)
    ends = Counter(end for end, _ in answers)
    print(
        f"FIGURE header flood: {HEADER_CONNECTIONS} connections x {HEADERS_EACH} headers x "
        f"{HEADER_BYTES} B: service RSS +{grown_mib:.1f} MiB (ceiling {RSS_CEILING_MIB}), "
        f"connections {dict(ends)}, /healthz worst {probe.worst * 1000:.0f} ms over "
        f"{probe.answers} probes"
    )
    assert grown_mib < RSS_CEILING_MIB
    assert ends["open"] == 0  # every one refused, none held
    for _, answer in answers:
        if answer:
            assert b"application/json" in answer
            assert b"aiohttp" not in answer
    assert probe.worst < time_bound(strict=0.25, generous=10.0)


async def test_a_head_sent_slowly_is_cut_off(service: ServiceProcess) -> None:
    """A head that trickles in (a header every 0.5 s) gets 408 after HEAD_TIMEOUT, and a
    connection that sends nothing is closed after KEEPALIVE_TIMEOUT (aiohttp's own
    limit for both was 75 s of keep-alive)."""
    async with aiohttp.ClientSession() as session:
        await wait_until_ready(session, f"{service.base}/readyz")
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", service.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    start = time.perf_counter()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    answer = b""
    try:
        for i in range(int(HEAD_TIMEOUT * 2) + 20):  # bounded: gives up 10 s past the limit
            with contextlib.suppress(ConnectionError):
                writer.write(b"X-Slow-%d: a\r\n" % i)
                await writer.drain()
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(0.5):
                    answer += await reader.read(4096)
            if answer or reader.at_eof():
                break
        answer += await _read_all(reader, 2.0)
    finally:
        writer.close()
    took = time.perf_counter() - start
    try:
        idle_answer = await _read_all(idle_reader, KEEPALIVE_TIMEOUT + 8 - took)
        idle_closed = idle_reader.at_eof()
    finally:
        idle_writer.close()
    idle_took = time.perf_counter() - start
    print(
        f"FIGURE slow head: cut off after {took:.1f} s (limit {HEAD_TIMEOUT:g} s); "
        f"an idle connection closed after {idle_took:.1f} s (limit {KEEPALIVE_TIMEOUT:g} s)"
    )
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"request_timeout"' in answer
    assert took < HEAD_TIMEOUT + 8
    assert idle_closed
    assert idle_answer == b""  # nothing was asked: closed without an answer


async def _raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return await _read_all(reader, 5.0)
    finally:
        writer.close()


async def test_errors_of_aiohttp_itself_are_json_without_a_banner(service: ServiceProcess) -> None:
    async with aiohttp.ClientSession() as session:
        await wait_until_ready(session, f"{service.base}/readyz")
        answers = {
            "404": await (await session.get(f"{service.base}/nope")).read(),
            "405": await (await session.put(f"{service.base}/v1/runs")).read(),
        }
        checked = [
            await session.get(f"{service.base}/nope"),
            await session.get(f"{service.base}/healthz"),
        ]
        for response in checked:
            assert response.headers.get("Server") == "agentwatch"
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    many = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: a\r\n" % i for i in range(200))
        + b"\r\n"
    )
    raw = {
        "not HTTP": b"GARBAGE\r\n\r\n",
        "a control character": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: \x01\r\n\r\n",
        "a line too long": big,
        "too many headers": many,
        "a head too large": b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 4000) for i in range(MAX_HEAD_BYTES // 4000 + 2))
        + b"\r\n",
    }
    for name, data in raw.items():
        answer = await _raw(service.port, data)
        head, _, body = answer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        assert 400 <= status < 500, (name, head)
        assert b"application/json" in head, (name, head)
        assert b"Server: agentwatch" in head, (name, head)
        assert b"aiohttp" not in head, (name, head)
        error = json.loads(body)["error"]
        assert error["type"], name
        assert error["message"], name
        answers[name] = answer
    print(f"FIGURE aiohttp-level errors: {len(answers)} kinds, all JSON, Server: agentwatch")


# --- request bodies: one strict JSON policy, 4xx never 5xx, never a failed run ---

DEEP = "[" * 5000 + "]" * 5000
TASK = '{"id": 1, "query": "q"}'
HOSTILE_BODIES: dict[str, tuple[str, str | bytes, int]] = {
    "nested 5,000 deep (runs)": ("/v1/runs", '{"input": ' + DEEP + "}", 400),
    "nested 5,000 deep (batches)": ("/v1/batches", '{"tasks": ' + DEEP + "}", 400),
    "a 5,000-digit integer": (
        "/v1/batches", '{"tasks": [{"id": ' + "9" * 5000 + ', "query": "q"}]}', 400
    ),
    "a lone surrogate": ("/v1/runs", '{"input": "\\ud800"}', 400),
    "a lone surrogate in a task": (
        "/v1/batches", '{"tasks": [{"id": 1, "query": "\\udc00x"}]}', 400
    ),
    "timeout NaN": ("/v1/batches", f'{{"tasks": [{TASK}], "timeout": NaN}}', 400),
    "timeout Infinity": ("/v1/batches", f'{{"tasks": [{TASK}], "timeout": Infinity}}', 400),
    "timeout 1e999": ("/v1/batches", f'{{"tasks": [{TASK}], "timeout": 1e999}}', 400),
    "timeout true": ("/v1/batches", f'{{"tasks": [{TASK}], "timeout": true}}', 422),
    "duplicate keys (runs)": ("/v1/runs", '{"input": "hi", "input": "calculate 1+1"}', 400),
    "duplicate keys (batches)": ("/v1/batches", f'{{"tasks": [], "tasks": [{TASK}]}}', 400),
    "an unknown field (batches)": ("/v1/batches", f'{{"tasks": [{TASK}], "priority": 1}}', 422),
    "a 900 KB conversation_id": (
        "/v1/runs", json.dumps({"input": "hi", "conversation_id": "c" * 900_000}), 422
    ),
    "a task id of 300 characters": (
        "/v1/batches", json.dumps({"tasks": [{"id": "t" * 300, "query": "q"}]}), 422
    ),
    "not UTF-8": ("/v1/runs", b'{"input": "\xff"}', 400),
}  # fmt: skip


async def test_hostile_bodies_are_client_errors_never_failed_runs(
    aiohttp_client: Client,
    telemetry: Telemetry,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await aiohttp_client(create_app(RuntimeSettings(), telemetry))
    statuses = {}
    with caplog.at_level(logging.WARNING):
        for name, (path, body, expected) in HOSTILE_BODIES.items():
            response = await client.post(
                path, data=body, headers={"Content-Type": "application/json"}
            )
            statuses[name] = response.status
            error = (await response.json())["error"]
            assert response.status == expected, (name, response.status, error)
            assert error["type"]
            assert error["message"]
        ok = await client.post(
            "/v1/runs", json={"input": "hi", "conversation_id": "c" * MAX_ID_CHARS}
        )
        assert ok.status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    runs = registry.get_sample_value(
        "gen_ai_invoke_agent_duration_seconds_count",
        {
            "gen_ai_agent_name": "research_agent",
            "gen_ai_request_model": "agentwatch-builtin",
            "error_type": "",
        },
    )
    assert runs == 1  # the one good run; no refused request became a run, failed or not
    failed = [
        s
        for family in registry.collect()
        for s in family.samples
        if s.name == "gen_ai_invoke_agent_duration_seconds_count" and s.labels.get("error_type")
    ]
    assert failed == []
    print(f"FIGURE hostile bodies: {len(statuses)} kinds -> {sorted(set(statuses.values()))}")


async def test_a_lone_surrogate_is_refused_before_the_run(telemetry: Telemetry) -> None:
    """The library path too: Agent.arun refuses it (never a run failing with
    UnicodeEncodeError in the model client)."""
    async with AgentRuntime(RuntimeSettings(), telemetry) as runtime:
        with pytest.raises(AgentInputError):
            await runtime.agent.arun("what is \ud800")
        with pytest.raises(AgentInputError):
            async for _ in runtime.agent.astream("\udfff"):
                pass


@pytest.mark.parametrize("where", ["/v1/runs", "/metrics"])
async def test_a_bearer_token_that_is_not_utf8_is_401(
    aiohttp_client: Client, telemetry: Telemetry, where: str
) -> None:
    settings = replace(RuntimeSettings(), api_token="secret", metrics_token="scrape")
    client = await aiohttp_client(create_app(settings, telemetry))
    # aiohttp's client refuses to send such a header: write it on the socket.
    assert client.port is not None
    method = "POST" if where == "/v1/runs" else "GET"
    answer = await _raw(
        client.port,
        f"{method} {where} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n".encode()
        + b"Connection: close\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:300]
    assert b'"unauthorized"' in answer


async def test_a_body_sent_too_slowly_is_408(
    aiohttp_client: Client, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body announced and never finished holds nothing past BODY_TIMEOUT (30 s;
    0.5 s here)."""
    monkeypatch.setattr(jsonpolicy, "BODY_TIMEOUT", 0.5)
    client = await aiohttp_client(create_app(RuntimeSettings(), telemetry))
    assert client.port is not None
    head = (
        b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(head + b'{"input": ')  # 10 of the 100 bytes, then nothing
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.readuntil(b"}}")
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"request_timeout"' in answer


def test_span_attributes_are_bounded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A 900 KB attribute is cut to DEFAULT_ATTRIBUTE_LENGTH (the SDK's default is no
    limit); OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT still decides when set. Cutting is the
    limit working: no warning (the SDK logged one per value cut, which `agentwatch run`
    printed before its one-line error: the failed run's stack trace on its span)."""
    caplog.set_level(logging.WARNING)
    for env, expected in ((None, DEFAULT_ATTRIBUTE_LENGTH), ("100", 100)):
        if env is None:
            monkeypatch.delenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", raising=False)
        else:
            monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", env)
        exporter = InMemorySpanExporter()
        telemetry = build_telemetry(registry=CollectorRegistry(), span_exporter=exporter)
        provider = telemetry.tracer_provider
        assert provider is not None
        span = provider.get_tracer("test").start_span("s", attributes={"big": "x" * 900_000})
        span.end()
        telemetry.shutdown()
        (finished,) = exporter.get_finished_spans()
        assert len(str((finished.attributes or {})["big"])) == expected
    assert "exceeds max length" not in caplog.text


# --- admission: interactive runs keep a share; the wait is part of the run's time ---


async def test_queued_batches_leave_interactive_runs_a_share(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    """2 run slots, a batch of 8 one-second runs with 8 workers: before, an interactive
    run queued behind all 8 (the batch was done when it answered); now batches take at
    most 1 of the 2 slots and the interactive run answers while the batch has barely
    started."""
    settings = replace(RuntimeSettings(), max_concurrent_runs=2, builtin_latency=1.0)
    client = await aiohttp_client(create_app(settings, telemetry))
    tasks = [{"id": i, "query": f"what is {i} + 1"} for i in range(8)]
    started = await client.post("/v1/batches", json={"tasks": tasks, "workers": 8})
    assert started.status == 202
    url = (await started.json())["url"]
    for _ in range(500):  # bounded: until the batch holds its slot and its workers queue
        counts = (await (await client.get(url)).json())["counts"]
        if counts.get("processing", 0) >= 1:
            break
        await asyncio.sleep(0.01)
    run = await client.post("/v1/runs", json={"input": "what is 2 + 2"})
    assert run.status == 200
    done = (await (await client.get(url)).json())["done"]
    print(
        f"FIGURE interactive run beside a batch of 8: answered when {done}/8 batch tasks were done"
    )
    assert done < 6  # before: 8 (it queued behind the whole batch); now about 1
    await client.delete(url)


async def test_the_wait_for_a_slot_counts_against_the_run_timeout(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    settings = replace(RuntimeSettings(), max_concurrent_runs=1, run_timeout=1.0)
    app = create_app(settings, telemetry)
    client = await aiohttp_client(app)
    agent = app[RUNTIME_KEY].agent
    loop = asyncio.get_running_loop()
    await agent.admission.acquire(deadline=loop.time() + 5)  # a run holding the only slot
    try:
        start = time.perf_counter()
        response = await client.post("/v1/runs", json={"input": "hi"})
        took = time.perf_counter() - start
    finally:
        agent.admission.release()
    assert response.status == 504
    assert (await response.json())["error"]["type"] == "run_timeout"
    assert took < 10  # sanity: the deadline, not a wait for the slot
    assert (await client.post("/v1/runs", json={"input": "hi"})).status == 200


async def test_a_stream_waiting_for_a_slot_says_so(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    settings = replace(RuntimeSettings(), max_concurrent_runs=1)
    app = create_app(settings, telemetry)
    client = await aiohttp_client(app)
    agent = app[RUNTIME_KEY].agent
    loop = asyncio.get_running_loop()
    await agent.admission.acquire(deadline=loop.time() + 5)
    held = True
    try:
        response = await client.post("/v1/runs", json={"input": "hi", "stream": True})
        assert response.status == 200
        async with asyncio.timeout(10):
            first = await response.content.readline()
        assert first == b": waiting for a run slot\n"
        agent.admission.release()
        held = False
        async with asyncio.timeout(30):
            rest = (await response.read()).decode()
    finally:
        if held:
            agent.admission.release()
    assert "event: result" in rest


# --- the builtin model: a client that drops a stream is normal, not an error ---


def _noticed_the_client_leave(log: str) -> bool:
    """The model's debug line: its handler cancelled, or its write refused."""
    return "client disconnected" in log or "closed the stream" in log


async def test_model_server_logs_no_error_when_a_client_drops_a_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    behavior = ModelBehavior(tokens_per_second=20)
    message = {"role": "user", "content": "hello there"}
    body = {"model": "agentwatch-builtin", "stream": True, "messages": [message]}
    with caplog.at_level(logging.DEBUG, logger="agentwatch.model"):
        async with BuiltinModelServer(behavior) as model:
            async with aiohttp.ClientSession() as session:
                response = await session.post(f"{model.base_url}/chat/completions", json=body)
                await response.content.readline()  # the first chunk, then hang up
                response.close()
            for _ in range(100):  # bounded: up to 10 s for the server to notice
                if _noticed_the_client_leave(caplog.text):
                    break
                await asyncio.sleep(0.1)
    assert _noticed_the_client_leave(caplog.text), caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


# --- a wide body under the size limit: parsed off the loop, checked at C speed ---

WIDE_BODIES_AT_ONCE = 16
WIDE_BODY_LIMIT = 1024 * 1024  # RuntimeSettings.max_body_bytes's default


def _wide_body() -> bytes:
    """``{"input": "hi", "x": [{}, {}, ...]}`` just under the body limit: ~349,000 empty
    objects, each a node a Python walk over the tree would visit on the loop."""
    head, tail = b'{"input": "hi", "x": [', b"{}]}"
    count = (WIDE_BODY_LIMIT - len(head) - len(tail)) // 3
    return head + b"{}," * count + tail


async def test_wide_bodies_at_once_do_not_freeze_the_service(service: ServiceProcess) -> None:
    """Before: the strict parser walked every node in Python on the event loop (0.84 s
    for one such body); four at once made /healthz take 2.3 s."""
    body = _wide_body()
    assert len(body) <= WIDE_BODY_LIMIT
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await wait_until_ready(session, f"{service.base}/readyz")

        async def post() -> tuple[int, str]:
            async with session.post(
                f"{service.base}/v1/runs", data=body, headers=headers
            ) as response:
                return response.status, (await response.json())["error"]["type"]

        async with HealthProbe(service.base).running() as probe:
            answers = await asyncio.gather(*(post() for _ in range(WIDE_BODIES_AT_ONCE)))
    print(
        f"FIGURE {WIDE_BODIES_AT_ONCE} wide 1 MiB bodies at once: {Counter(answers)}, "
        f"/healthz worst {probe.worst * 1000:.0f} ms over {probe.answers} probes"
    )
    assert answers == [(422, "invalid_request")] * WIDE_BODIES_AT_ONCE  # the unknown field
    assert probe.worst < time_bound(strict=0.25, generous=10.0)


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        ('{"input": ' + "[" * 31 + "]" * 31 + "}", True),  # 32 levels with the object
        ('{"input": ' + "[" * 32 + "]" * 32 + "}", False),
        ('{"input": ' + '[{"a": ' * 15 + "[]" + "}]" * 15 + "}", True),  # 32, mixed
        ('{"input": ' + '[{"a": ' * 15 + "[[]]" + "}]" * 15 + "}", False),
        ('{"input": "' + "[{" * 100 + '", "stream": [[], [[]], {}]}', True),  # in a string
        ('{"input": "\\ud83d\\ude00 \\\\ud800"}', True),  # a pair; an escaped backslash
        ('{"input": "\\ud83d"}', False),
        ('{"input": "x\\uDE00"}', False),
    ],
)
def test_the_json_policy_at_its_bounds(body: str, accepted: bool) -> None:
    if accepted:
        server.parse_json(body.encode(), server.RUN_FIELDS)
    else:
        with pytest.raises(server.ApiError) as refused:
            server.parse_json(body.encode(), server.RUN_FIELDS)
        assert refused.value.status == 400


def _shed(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("agentwatch_admission_shed_total", {"reason": reason}) or 0


async def test_a_batch_run_waits_in_line_without_its_run_timeout_and_sheds_are_counted(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    """A run of a batch that waits for a slot longer than run_timeout still runs (its
    task's own timeout bounds the wait; before, it failed "took longer than 0.3 s"
    without ever running). An interactive run's wait still counts: it fails with
    RunTimeoutError, and every run that ends before a slot is counted by reason."""
    settings = replace(RuntimeSettings(), max_concurrent_runs=1, run_timeout=0.3)
    async with AgentRuntime(settings, telemetry) as runtime:
        agent = runtime.agent
        loop = asyncio.get_running_loop()
        await agent.admission.acquire(deadline=loop.time() + 5)  # a run holding the slot
        held = True
        try:
            batch_run = asyncio.create_task(agent.arun("what is 2 + 2", batch=True))
            with pytest.raises(RunTimeoutError):
                await agent.arun("hi")  # waits 0.3 s, then is shed
            gone = asyncio.create_task(agent.arun("hi"))
            await asyncio.wait({gone}, timeout=0.05)
            gone.cancel()  # its caller goes away while it waits
            with pytest.raises(asyncio.CancelledError):
                await gone
            done, _ = await asyncio.wait({batch_run}, timeout=1.0)  # 3 x run_timeout
            assert not done, batch_run  # still waiting in line, not failed
            agent.admission.release()
            held = False
            async with asyncio.timeout(30):
                result = await batch_run
        finally:
            if held:
                agent.admission.release()
    assert "4" in result.output
    assert _shed(registry, "timeout") == 1
    assert _shed(registry, "cancelled") == 1
    failed = [
        s
        for family in registry.collect()
        for s in family.samples
        if s.name == "gen_ai_invoke_agent_duration_seconds_count" and s.labels.get("error_type")
    ]
    assert failed == []  # the shed runs never started: no invoke_agent recorded


# --- the connection limits are the runner's: an embedding host gets them too ---


async def test_an_embedding_host_gets_the_connection_limits_from_make_runner(
    telemetry: Telemetry,
) -> None:
    """``create_app`` served with ``make_runner``/``start_site`` (what a host embedding the
    service uses in place of ``web.run_app``) refuses a head over MAX_HEAD_BYTES with 431."""
    runner = make_runner(create_app(RuntimeSettings(), telemetry))
    await runner.setup()
    try:
        await start_site(runner, "127.0.0.1", 0)
        port = runner.addresses[0][1]
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
            b"X-%d: %s\r\n" % (i, b"a" * 4000) for i in range(MAX_HEAD_BYTES // 4000 + 2)
        )
        answer = await _raw(port, head + b"\r\n")
    finally:
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"header_too_large"' in answer


async def test_the_aiohttp_internals_the_limits_use_are_there() -> None:
    """runtime/http/serving.py's LimitedRequestHandler reads aiohttp internals; a release
    without them must fail here, by name, not silently lose the limits."""
    runner = make_runner(web.Application())
    await runner.setup()
    try:
        server = runner.server
        assert server is not None
        handler = server()
        missing = [f"RequestHandler.{a}" for a in ("_messages", "_loop") if not hasattr(handler, a)]
        missing += [f"Server.{a}" for a in ("_loop", "_kwargs") if not hasattr(server, a)]
        if not hasattr(StreamWriter, "output_size"):
            missing.append("StreamWriter.output_size")
    finally:
        await runner.cleanup()
    assert not missing, (
        f"aiohttp {aiohttp.__version__} no longer has {missing}: runtime/http/serving.py's "
        "connection limits depend on them; adapt LimitedRequestHandler or pin aiohttp"
    )


# --- round two of the hostile tester: compressed bodies, bodies held at once, Expect,
# --- log noise a client can cause


def _gzip_bomb(inflated: int) -> bytes:
    """``inflated`` bytes of spaces, gzipped (about a thousandth of the size)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    chunk = b" " * (1024 * 1024)
    parts = [packer.compress(chunk) for _ in range(inflated // len(chunk))]
    return b"".join([*parts, packer.flush()])


async def test_compressed_bodies_are_refused_never_inflated(
    aiohttp_client: Client,
    telemetry: Telemetry,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: invalid gzip was a 500 `internal_error` with a traceback (a client's
    mistake counted as a server failure), and a gzip bomb was inflated on the loop
    before the 1 MiB limit refused it (a 1 MiB bomb: 2.9 s, /healthz 1.56 s)."""
    client = await aiohttp_client(create_app(RuntimeSettings(), telemetry))
    bomb = _gzip_bomb(256 * 1024 * 1024)
    cases = {
        "invalid gzip (runs)": ("/v1/runs", "gzip", b"abcd"),
        "invalid gzip (batches)": ("/v1/batches", "gzip", b"abcd"),
        "valid gzip": ("/v1/runs", "gzip", gzip.compress(b'{"input": "hi"}')),
        "deflate": ("/v1/runs", "deflate", zlib.compress(b'{"input": "hi"}')),
        "a gzip bomb (256 MiB inflated)": ("/v1/runs", "gzip", bomb),
    }
    with caplog.at_level(logging.WARNING):
        async with HealthProbe(str(client.make_url(""))).running() as probe:
            for name, (path, encoding, data) in cases.items():
                response = await client.post(
                    path,
                    data=data,
                    headers={"Content-Type": "application/json", "Content-Encoding": encoding},
                )
                error = (await response.json())["error"]
                assert (response.status, error["type"]) == (415, "unsupported_media_type"), (
                    name,
                    error,
                )
                assert "uncompressed" in error["message"]
        plain = await client.post("/v1/runs", json={"input": "hi"}, headers={})
        assert plain.status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert http_count(registry, "500") == 0
    assert http_count(registry, "500", "/v1/batches") == 0
    print(
        f"FIGURE compressed bodies: {len(cases)} cases all 415 (a {len(bomb) // 1024} KiB "
        f"bomb never inflated), /healthz worst {probe.worst * 1000:.0f} ms"
    )
    assert probe.worst < time_bound(strict=0.25, generous=10.0)


async def test_an_unknown_expect_is_a_json_417(
    aiohttp_client: Client, telemetry: Telemetry
) -> None:
    """aiohttp answers an Expect it does not know before any middleware runs; it was
    text/plain "Unknown Expect: 999-weird"."""
    client = await aiohttp_client(create_app(RuntimeSettings(), telemetry))
    assert client.port is not None
    answer = await _raw(
        client.port,
        b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nExpect: 999-weird\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 417 "), answer[:300]
    assert b"application/json" in head
    assert b"Server: agentwatch" in head
    error = json.loads(body)["error"]
    assert error["type"] == "expectation_failed"
    assert "100-continue" in error["message"]
    continued = await client.post(
        "/v1/runs", json={"input": "hi"}, headers={"Expect": "100-continue"}
    )
    assert continued.status == 200  # the one Expect there is still works


async def test_a_large_baggage_header_logs_nothing_and_traceparent_still_counts(
    aiohttp_client: Client,
    telemetry: Telemetry,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """OpenTelemetry's baggage propagator warned on every request whose `baggage` was
    over 8,192 bytes: any client could fill the log. The service reads no baggage."""
    client = await aiohttp_client(create_app(RuntimeSettings(), telemetry))
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {
        "baggage": ",".join(f"k{i}={'v' * 80}" for i in range(90)),  # ~7.6 KB, 90 entries
        "Baggage-Too": "x",
        "Traceparent": f"00-{trace_id}-{parent_id}-01",  # any case, as HTTP allows
    }
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            response = await client.post("/v1/runs", json={"input": "hi"}, headers=headers)
            assert response.status == 200
            assert (await response.json())["trace_id"] == trace_id
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")], caplog.text
    agent = exporter.get_finished_spans()[-1]
    assert agent.parent is not None
    assert format(agent.parent.span_id, "016x") == parent_id


BODY_CONNECTIONS = 300
BODY_LIMIT = 1024 * 1024  # RuntimeSettings.max_body_bytes's default
# The service's growth: MAX_BODY_BYTES_IN_FLIGHT (64 MiB, read into growing buffers), ~60
# MiB of the 300 connections' own buffers (measured with a 1 MiB budget), allocator slack.
# Measured 124-152 MiB, once 201.6 MiB on a loaded machine (the 300 connections' buffers
# are freed late when the loop runs late); before the ceiling 379 MiB.
BODY_RSS_CEILING_MIB = 260


async def _stalled_body(port: int, hold: asyncio.Event) -> bytes:
    """One connection: a 1 MiB body announced, all but its last 100 bytes sent, then
    nothing until ``hold`` is set. What it read by then (a 503, or nothing)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % BODY_LIMIT
        )
        writer.write(b" " * (BODY_LIMIT - 100))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        await hold.wait()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(0.5):
                return await reader.readuntil(b"}}")
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_bodies_held_at_once_have_a_ceiling(service: ServiceProcess) -> None:
    """300 connections each send 1 MiB - 100 bytes of a 1 MiB body and stall. Before:
    all 300 were read into memory (RSS +378 MiB for the 30 s body timeout, still +228
    MiB after they closed). Now the bodies in flight are bounded
    (MAX_BODY_BYTES_IN_FLIGHT): past it a body gets 503 + Retry-After before a byte of
    it is read, and the budget is free again once its connections are gone."""
    answers, grown_mib, probe = await _held_open(service, _stalled_body, BODY_CONNECTIONS)
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
    admitted = MAX_BODY_BYTES_IN_FLIGHT // BODY_LIMIT
    print(
        f"FIGURE {BODY_CONNECTIONS} stalled 1 MiB bodies: service RSS +{grown_mib:.1f} MiB "
        f"(ceiling {BODY_RSS_CEILING_MIB}), {len(refused)} refused with 503, "
        f"/healthz worst {probe.worst * 1000:.0f} ms over {probe.answers} probes"
    )
    assert len(refused) >= BODY_CONNECTIONS - admitted
    for answer in refused:
        assert b"Retry-After: " in answer
        assert b'"too_many_bodies"' in answer
    assert grown_mib < BODY_RSS_CEILING_MIB
    # The loop receives ~300 MiB in these seconds (a refused body is read and dropped so
    # that its client can read the 503): ~0.4 s here with or without the ceiling.
    assert probe.worst < time_bound(strict=1.0, generous=10.0)
    async with aiohttp.ClientSession() as session:  # the stalled bodies' share is free again
        for _ in range(100):  # bounded: 10 s for the server to see the connections gone
            async with session.post(f"{service.base}/v1/runs", json={"input": "hi"}) as r:
                if r.status != 503:
                    break
            await asyncio.sleep(0.1)
        assert r.status == 200
