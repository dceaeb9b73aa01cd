"""The dashboard, the alert rules and the stack files, proven against real tools.

A real Prometheus (Debian's package) scrapes the running service every second with
exemplar storage on, while a workload touches every part of it; then EVERY query of the
dashboard and EVERY alert expression is evaluated through Prometheus's HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.runtime.agents.agent_runtime import AgentRuntime
from agentwatch.runtime.builtin_model import ModelBehavior
from agentwatch.runtime.rate_limits import PerModel, RateLimits
from agentwatch.runtime.retry import RetryPolicy
from agentwatch.runtime.service.app import create_app
from agentwatch.runtime.settings import RuntimeSettings
from agentwatch.telemetry import Telemetry
from agentwatch.telemetry.catalog import MetricCatalog
from tests.helpers import free_port, wait_until_ready

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: `make test` installs Debian's prometheus")
    return path


def test_committed_dashboard_is_the_generators_output() -> None:
    sys.path.insert(0, str(DASHBOARDS))
    try:
        import generate  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(DASHBOARDS))
    assert json.loads((DASHBOARDS / "agentwatch.json").read_text()) == generate.build()


def test_promtool_checks_config_rules_and_rule_tests() -> None:
    promtool = tool("promtool")
    for args in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ):
        out = subprocess.run(
            [promtool, *args],
            cwd=DASHBOARDS,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr


def test_docker_compose_config_is_valid() -> None:
    compose = Path(sys.executable).with_name("docker-compose")
    out = subprocess.run(
        [str(compose), "-f", "docker-compose.yml", "config", "--format", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    assert set(services) == {
        "model",
        "agentwatch",
        "worker",
        "redis",
        "prometheus",
        "grafana",
        "jaeger",
    }
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]
    for scaled in ("agentwatch", "worker"):  # replicas, each found by Prometheus's DNS SD
        assert services[scaled]["deploy"]["replicas"] >= 2
        assert services[scaled]["environment"]["AGENTWATCH_REDIS_URL"] == "redis://redis:6379/0"
    scrape = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())["scrape_configs"]
    found = {c["job_name"]: c["dns_sd_configs"][0]["names"] for c in scrape}
    assert found == {"agentwatch": ["agentwatch"], "agentwatch-worker": ["worker"]}
    for service in services.values():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1"
        for volume in service.get("volumes", []):  # a bind mount's file is in the repo
            assert volume["type"] == "volume" or Path(volume["source"]).exists(), volume


# Catalog metrics with no panel: observe() times the user's own functions, which have no
# fixed shape to chart (their own dashboards use the metric).
NOT_ON_THE_DASHBOARD = {"agentwatch_operation_duration_seconds"}


def test_every_catalog_metric_has_a_panel() -> None:
    """A metric added to the catalog is charted too (agentwatch_admission_shed_total
    and agentwatch_batch_task_duration_seconds were not)."""
    registry = CollectorRegistry()
    MetricCatalog.create(registry)
    exprs = " ".join(expr for _, expr in dashboard_queries())
    charted = set(re.findall(r"[a-z_]+", exprs))
    families = {family.name for family in registry.collect()}
    missing = [
        name
        for name in sorted(families - NOT_ON_THE_DASHBOARD)
        if not charted & {name + suffix for suffix in ("", "_total", "_bucket", "_count", "_sum")}
    ]
    assert missing == []


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads((DASHBOARDS / "agentwatch.json").read_text())
    queries = [
        (f"{panel['title']} [{t['refId']}]", t["expr"])
        for panel in board["panels"]
        for t in panel.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            metric = re.match(r"label_values\((.+), \w+\)$", variable["definition"])
            assert metric is not None, variable["definition"]
            queries.append((f"variable {variable['name']}", metric.group(1)))
    return queries


def alert_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"] if "alert" in r]


def as_prometheus_query(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "1m")
        .replace('"$job"', '"agentwatch"')
        .replace('"$instance"', '".*"')
    )


@pytest.fixture
async def service(telemetry: Telemetry) -> AsyncIterator[str]:
    faults = ModelBehavior(error_rate=0.25, fail_status=429, retry_after=0.01, seed=3)
    quick = RetryPolicy(max_tries=8, base_delay=0.01, max_delay=0.05)
    # gpt-4o-mini: a model the bundled price table knows, so the cost panels have data
    # and a rate limit high enough never to wait, so the rate limit panel has samples
    priced = RuntimeSettings(
        model="gpt-4o-mini", rate_limits=RateLimits(rpm=PerModel.parse("100000"))
    )
    runtime = AgentRuntime(priced, telemetry, model_behavior=faults, retry_policy=quick)
    await runtime.start()
    # a user's chain on a model no table prices (as the callback handler records it)
    with telemetry.llm_call("my-own-llm", "vllm") as call:
        call.set_response(input_tokens=10, output_tokens=5)
    runner = web.AppRunner(
        create_app(RuntimeSettings(), telemetry, runtime=runtime), handler_cancellation=True
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()
    await runtime.stop()


@pytest.fixture
async def prometheus(service: str, tmp_path: Path) -> AsyncIterator[str]:
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "agentwatch", "static_configs": [{"targets": [service]}]}
                ],
            }
        )
    )
    address = f"127.0.0.1:{free_port()}"
    process = await asyncio.create_subprocess_exec(
        tool("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address={address}",
        "--enable-feature=exemplar-storage",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://{address}"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until_ready(session, f"{url}/-/ready")
        yield url
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def workload(session: aiohttp.ClientSession, base: str) -> None:
    queries = ["what is 12 + 30", "search for exemplars", "calculate __import__('os')", "hello"]

    async def run(query: str, stream: bool) -> None:
        async with session.post(f"{base}/v1/runs", json={"input": query, "stream": stream}) as r:
            await r.read()

    await asyncio.gather(*(run(q, i % 2 == 1) for i, q in enumerate(queries * 3)))
    tasks = [{"id": f"t{i}", "query": f"what is {i} + 1", "priority": i % 3} for i in range(8)]
    async with session.post(f"{base}/v1/batches", json={"tasks": tasks, "workers": 2}) as r:
        batch_url = (await r.json())["url"]
    for _ in range(200):  # bounded: ~10 s
        async with session.get(f"{base}{batch_url}") as r:
            if (await r.json())["state"] != "running":
                break
        await asyncio.sleep(0.05)


Query = Callable[[str], Awaitable[dict[str, Any]]]


async def test_every_dashboard_query_returns_data_and_alerts_parse(
    service: str, prometheus: str, exporter: InMemorySpanExporter
) -> None:
    base = f"http://{service}"
    async with aiohttp.ClientSession() as session:

        async def query(expr: str) -> dict[str, Any]:
            async with session.get(f"{prometheus}/api/v1/query", params={"query": expr}) as r:
                body: dict[str, Any] = await r.json()
                return body

        deadline = time.monotonic() + 60
        pending = dict(dashboard_queries())
        while pending and time.monotonic() < deadline:  # bounded: 60 s
            await workload(session, base)  # keeps every rate() window populated
            for title, expr in list(pending.items()):
                body = await query(as_prometheus_query(expr))
                assert body["status"] == "success", (title, body)
                if body["data"]["result"]:
                    del pending[title]
        assert not pending, f"panels without data: {sorted(pending)}"

        for name, expr in alert_expressions():
            body = await query(expr)
            assert body["status"] == "success", (name, body)

        now = time.time()
        params = {
            "query": "gen_ai_invoke_agent_duration_seconds_bucket",
            "start": str(now - 300),
            "end": str(now),
        }
        async with session.get(f"{prometheus}/api/v1/query_exemplars", params=params) as r:
            exemplars = (await r.json())["data"]
    trace_ids = {e["labels"]["trace_id"] for series in exemplars for e in series["exemplars"]}
    assert trace_ids, "no exemplars stored"
    exported = {format(s.context.trace_id, "032x") for s in exporter.get_finished_spans()}
    assert trace_ids <= exported
