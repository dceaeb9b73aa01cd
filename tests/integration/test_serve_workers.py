"""``agentwatch serve --workers N``: one port, N processes, one ``/metrics`` that counts
the work of all of them (exemplars kept), a worker that dies started again, SIGTERM
drains them all."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from agentwatch.runtime.cli.workers import WORKER_HEADER
from tests.helpers import ServiceProcess, cli_process, wait_until_ready

T = TypeVar("T")

RUN = {"input": "what is 2 + 3"}
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()]


async def run_once(base: str) -> str:
    """One run over a connection of its own (the kernel picks the worker for it)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.post(f"{base}/v1/runs", json=RUN) as response,
    ):
        assert response.status == 200, await response.text()
        return response.headers[WORKER_HEADER]


async def settled(attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()``, again on a connection the kernel reset (bounded: 20 tries). Linux
    resets the connections waiting at a worker's socket when the worker dies, and the
    port's SO_REUSEPORT group changes while a replacement starts."""
    for _ in range(19):
        try:
            return await attempt()
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.1)
    return await attempt()


async def scrape(base: str) -> dict[str, float]:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.get(f"{base}/metrics") as response,
    ):
        text = await response.text()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name
        in (
            "gen_ai_invoke_agent_duration_seconds_count",
            "agentwatch_serve_workers",
            "agentwatch_serve_workers_scraped",
        )
    }


async def spread_runs(base: str, at_least: int) -> tuple[int, set[str]]:
    """Runs in rounds of 20 at once until both workers answered some and ``at_least``
    ran (bounded: 15 rounds)."""
    done, seen = 0, set()
    for _ in range(15):
        seen.update(await asyncio.gather(*(run_once(base) for _ in range(20))))
        done += 20
        if done >= at_least and len(seen) == 2:
            break
    return done, seen


async def test_two_workers_serve_one_port_and_every_scrape_counts_all_runs() -> None:
    with cli_process("serve", "--workers", "2") as service:
        async with aiohttp.ClientSession() as session:
            await wait_until_ready(session, f"{service.base}/healthz", seconds=120)
        done, seen = await spread_runs(service.base, 60)
        assert seen == {"0", "1"}
        for _ in range(8):  # each scrape lands on either worker: each counts both
            assert await scrape(service.base) == {
                "gen_ai_invoke_agent_duration_seconds_count": done,
                "agentwatch_serve_workers": 2,
                "agentwatch_serve_workers_scraped": 2,
            }
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{service.base}/metrics", headers={"Accept": OPENMETRICS}) as response,
        ):
            exposition = await response.text()
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        buckets = [
            line
            for line in exposition.splitlines()
            if line.startswith("gen_ai_invoke_agent_duration_seconds_bucket")
        ]
        assert any(' # {trace_id="' in line for line in buckets)


async def test_a_killed_worker_is_started_again_and_sigterm_stops_all() -> None:
    with cli_process("serve", "--workers", "2") as service:
        async with aiohttp.ClientSession() as session:
            await wait_until_ready(session, f"{service.base}/healthz", seconds=120)
        workers = children(service.pid)
        assert len(workers) == 2
        await run_once(service.base)
        os.kill(workers[0], signal.SIGKILL)
        replaced = await _replaced(service, workers)
        assert workers[1] in replaced
        assert workers[0] not in replaced
        for _ in range(100):  # bounded: the new worker starts its model and listens
            scraped = await settled(lambda: scrape(service.base))
            if scraped.get("agentwatch_serve_workers_scraped") == 2:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the restarted worker never answered a scrape")
        await settled(lambda: run_once(service.base))

        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=60) == 0
        assert all(_gone(pid) for pid in replaced)


async def _replaced(service: ServiceProcess, before: list[int]) -> list[int]:
    for _ in range(100):  # bounded: the parent looks every 0.2 s
        now = children(service.pid)
        if len(now) == 2 and now != before:
            return now
        await asyncio.sleep(0.1)
    raise AssertionError(f"no worker was started again: {children(service.pid)}")


def _gone(pid: int) -> bool:
    """Exited (reaped, or a zombie its parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_workers_flag_is_checked() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentwatch.runtime.cli", "serve", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--workers must be at least 1, got 0" in done.stderr


async def test_workers_of_a_parent_killed_outright_drain_and_exit() -> None:
    with cli_process("serve", "--workers", "2") as service:
        async with aiohttp.ClientSession() as session:
            await wait_until_ready(session, f"{service.base}/healthz", seconds=120)
        workers = children(service.pid)
        service.process.kill()  # SIGKILL: nothing is passed on
        service.process.wait(timeout=30)
        for _ in range(300):  # bounded: each worker looks every second, then drains
            if all(_gone(pid) for pid in workers):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"workers still serving without their parent: {workers}")


def test_a_setting_every_worker_would_refuse_is_refused_once(tmp_path: Path) -> None:
    """A bad price file: one line and exit 2 from the parent, not workers dying in turn
    behind a "serving" line."""
    prices = tmp_path / "prices.json"
    prices.write_text("{not json")
    done = subprocess.run(
        [sys.executable, "-m", "agentwatch.runtime.cli", "serve", "--workers", "2", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "AGENTWATCH_PRICES_FILE": str(prices)},
    )
    assert done.returncode == 2, done.stderr
    assert "AGENTWATCH_PRICES_FILE" in done.stderr or str(prices) in done.stderr
    assert "serving on" not in done.stdout
