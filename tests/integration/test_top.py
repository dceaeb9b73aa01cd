"""``agentwatch top --once`` / ``--json`` against a real ``agentwatch serve``: the figures
of the scrape window are what the workload did inside it, and nothing from before; a
service that goes away is shown down, and once restarted counts from zero.

The service's model is the builtin model in this process, so the test decides which
model calls fail (HTTP 400: a run that fails, never retried). The service's /metrics
takes a token (AGENTWATCH_METRICS_TOKEN), which top sends from the same variable.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import pytest

from agentwatch.runtime.builtin_model.behavior import ModelBehavior
from agentwatch.runtime.builtin_model.server import BuiltinModelServer
from agentwatch.runtime.cli.top.monitor import ALL, Monitor
from agentwatch.runtime.cli.top.scrape import scrape_all
from tests.helpers import cli_env, free_port, serve_process, time_bound, wait_until_ready

pytestmark = pytest.mark.integration

TOKEN = "top-secret-metrics-token"
WINDOW = time_bound(6.0, 12.0)  # seconds between top's two scrapes; the workload takes ~1 s
CALCULATOR_RUNS, PLAIN_RUNS, FAILING_RUNS = 4, 2, 3


async def _start_top(
    url: str, *extra: str, token: str | None = TOKEN
) -> asyncio.subprocess.Process:
    env = cli_env() | ({"AGENTWATCH_METRICS_TOKEN": token} if token else {})
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentwatch.runtime.cli", "top", "--url", url,
        "--interval", str(WINDOW), *extra,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _first_scrape_done(top: asyncio.subprocess.Process) -> None:
    """Waits (at most 60 s) for top to say its first scrape is done."""
    assert top.stderr is not None
    line = await asyncio.wait_for(top.stderr.readline(), timeout=60)
    assert line.startswith(b"agentwatch top: first scrape done"), line


async def _finish(top: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(top.communicate(), timeout=WINDOW + 60)
    assert top.returncode is not None
    return top.returncode, out.decode(), err.decode()


async def _run(session: aiohttp.ClientSession, base: str, query: str) -> dict[str, Any]:
    async with session.post(f"{base}/v1/runs", json={"input": query}) as response:
        body: dict[str, Any] = await response.json()
        body["status"] = response.status
        return body


def _table_cells(text: str, name: str) -> list[str]:
    """The cells of the table row that starts with ``name``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[1] == name:
            return cells[1:-1]
    raise AssertionError(f"no row {name!r} in:\n{text}")


async def test_top_once_and_json_show_what_the_workload_did_in_the_window() -> None:
    async with BuiltinModelServer(ModelBehavior()) as model:
        with serve_process(
            OPENAI_BASE_URL=model.base_url,
            OPENAI_API_KEY="sk-test",
            AGENTWATCH_METRICS_TOKEN=TOKEN,
        ) as service:
            metrics = f"{service.base}/metrics"
            async with aiohttp.ClientSession() as session:
                await wait_until_ready(session, f"{service.base}/readyz", seconds=60)
                before = [await _run(session, service.base, "what is 2 + 2") for _ in range(2)]
                assert [r["status"] for r in before] == [200, 200]

                as_json = await _start_top(metrics, "--json")
                as_text = await _start_top(metrics, "--once", "--view", "tools")
                no_token = await _start_top(metrics, "--json", token=None)
                await _first_scrape_done(as_json)
                await _first_scrape_done(as_text)
                started = time.monotonic()

                runs = [await _run(session, service.base, f"what is {i} * 7") for i in range(4)]
                runs += [await _run(session, service.base, "hello") for _ in range(PLAIN_RUNS)]
                model.configure(ModelBehavior(fail_first=model.requests + FAILING_RUNS,
                                              fail_status=400))  # fmt: skip
                failed = [await _run(session, service.base, "hello") for _ in range(3)]
                model.configure(ModelBehavior())
                took = time.monotonic() - started

            code, out, err = await _finish(as_json)
            text_code, text, text_err = await _finish(as_text)
            refused_code, _, refused = await _finish(no_token)

    assert took < WINDOW, f"the workload took {took:.1f} s, longer than the window"
    assert [r["status"] for r in runs] == [200] * (CALCULATOR_RUNS + PLAIN_RUNS)
    assert [r["status"] for r in failed] == [502] * FAILING_RUNS
    tool_calls = sum(len(r["tool_calls"]) for r in runs)
    assert tool_calls == CALCULATOR_RUNS  # one calculator call each; "hello" calls none
    tokens = sum(r["usage"]["input_tokens"] + r["usage"]["output_tokens"] for r in runs)

    assert code == 0, err
    frame = json.loads(out)
    assert frame["targets"] == [
        {"url": metrics, "up": True, "error": None, "failures_in_a_row": 0, "restarted": False}
    ]
    figures = frame["figures"]
    assert figures["seconds"] >= WINDOW
    run = figures["runs"]
    total_runs = CALCULATOR_RUNS + PLAIN_RUNS + FAILING_RUNS
    assert (run["count"], run["errors"]) == (total_runs, FAILING_RUNS)  # not the 2 before
    assert run["error_ratio"] == pytest.approx(FAILING_RUNS / total_runs)
    [(error_type, share)] = run["error_ratio_by_type"].items()
    assert error_type.endswith("Error")  # langchain-openai's class for a 400
    assert share == pytest.approx(FAILING_RUNS / total_runs)
    assert run["per_second"] == pytest.approx(total_runs / figures["seconds"])
    assert 0 < run["p50_seconds"] <= run["p95_seconds"]
    [tool] = figures["tools"]
    assert (tool["name"], tool["calls"], tool["errors"]) == ("calculator", tool_calls, 0)
    assert figures["usage"]["input_tokens"] + figures["usage"]["output_tokens"] == tokens
    [model_row] = figures["models"]
    # each good run: two model calls with a tool, one without; each failed run: one
    assert model_row["calls"]["calls"] == 2 * CALCULATOR_RUNS + PLAIN_RUNS + FAILING_RUNS
    assert model_row["calls"]["error_types"] == {error_type: FAILING_RUNS}
    # gpt-4o-mini (the default model with OPENAI_API_KEY) is priced: what the runs cost
    spent = sum(r["usage"]["cost_usd"] for r in runs)
    assert spent > 0
    assert figures["usage"]["usd"] == pytest.approx(spent)
    assert figures["usage"]["usd_per_second"] == pytest.approx(spent / figures["seconds"])
    assert figures["health"]["spans_dropped"] == 0
    assert figures["batches"]["finished_per_second"] == 0

    assert text_code == 0, text_err
    for panel in ("Runs", "Tokens & spend", "Batches", "Health", "Tools"):
        assert panel in text, text
    assert f"{total_runs} in window" in text
    cells = _table_cells(text, "calculator")  # name, calls, /s, errors, ...
    assert (cells[1], cells[3]) == (str(tool_calls), "0")

    assert refused_code == 2
    assert f"cannot read {metrics}: 401 unauthorized" in refused


@contextmanager
def _serve_on(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """``agentwatch serve --port PORT``: the same address each time (a restart)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "agentwatch.runtime.cli", "serve", "--port", str(port)],
        env=cli_env(OTEL_TRACES_EXPORTER="none"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


async def test_a_target_that_goes_away_is_down_then_counts_from_zero_when_back() -> None:
    port = free_port()
    base, monitor = f"http://127.0.0.1:{port}", Monitor([f"http://127.0.0.1:{port}/metrics"])
    urls = [target.url for target in monitor.targets]
    async with aiohttp.ClientSession() as session:

        async def tick() -> None:
            monitor.update(await scrape_all(session, urls, time_limit=10, token=None))

        with _serve_on(port):
            await wait_until_ready(session, f"{base}/readyz", seconds=60)
            for i in range(5):
                assert (await _run(session, base, f"what is {i} + 1"))["status"] == 200
            await tick()
        await tick()  # nothing listens now
        [down] = monitor.as_json()["targets"]
        assert (down["up"], down["failures_in_a_row"]) == (False, 1)
        assert down["error"].startswith("cannot connect")
        assert monitor.figures[ALL] is None

        with _serve_on(port):  # a new process: its counters start at 0
            await wait_until_ready(session, f"{base}/readyz", seconds=60)
            for i in range(2):
                assert (await _run(session, base, f"what is {i} + 2"))["status"] == 200
            await tick()
    figures = monitor.figures[ALL]
    assert figures is not None
    assert monitor.targets[0].up
    assert monitor.targets[0].restarted
    assert (figures.restarted, figures.runs.count, figures.tools[0].calls) == (True, 2, 2)
