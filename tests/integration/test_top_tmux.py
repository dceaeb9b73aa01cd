"""``agentwatch top`` on a real terminal: tmux runs it against a live ``agentwatch serve``
(and a second URL where nothing listens), the test reads the screen with
``capture-pane`` and presses keys with ``send-keys``.

``AGENTWATCH_TOP_CAPTURE=docs/top.txt`` writes the last screen seen (the README links
that capture): ``AGENTWATCH_TOP_CAPTURE=docs/top.txt pytest tests/integration/test_top_tmux.py``.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import pytest

from agentwatch.runtime.builtin_model.behavior import ModelBehavior
from agentwatch.runtime.builtin_model.server import BuiltinModelServer
from tests.helpers import ServiceProcess, cli_env, free_port, serve_process, wait_until_ready

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("tmux") is None,
        reason="tmux is not installed (Debian: apt-get install -y tmux; `make tools` does it)",
    ),
]

WIDTH, HEIGHT = 160, 50
SCREEN_WAIT = 60.0  # seconds a screen may take to show what a step expects
CAPTURE = os.environ.get("AGENTWATCH_TOP_CAPTURE", "")  # where to save the last screen


class Tmux:
    """A tmux server of our own (its own socket, no user config), one session."""

    def __init__(self) -> None:
        self.socket = f"agentwatch-top-{uuid.uuid4().hex[:8]}"
        self.last = ""

    def __call__(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env=cli_env(LANG="C.UTF-8", LC_ALL="C.UTF-8"),
        )
        return out.stdout

    def screen(self) -> str:
        self.last = self("capture-pane", "-p", "-t", "top")
        return self.last

    async def wait_for(self, what: str, seen: Callable[[str], bool]) -> str:
        """The screen once ``seen(screen)``; fails after ``SCREEN_WAIT`` seconds."""
        for _ in range(int(SCREEN_WAIT / 0.25)):  # bounded
            text = self.screen()
            if seen(text):
                return text
            await asyncio.sleep(0.25)
        raise AssertionError(f"{what} not on screen within {SCREEN_WAIT:g} s:\n{self.last}")


@contextmanager
def tmux_session(command: str) -> Iterator[Tmux]:
    tmux = Tmux()
    tmux("new-session", "-d", "-s", "top", "-x", str(WIDTH), "-y", str(HEIGHT), command)
    try:
        yield tmux
    finally:
        subprocess.run(
            ["tmux", "-L", tmux.socket, "kill-server"], capture_output=True, timeout=30, check=False
        )


async def _workload(base: str, stop: asyncio.Event) -> int:
    """A 400-task batch and runs one after another (at most 500) until ``stop``."""
    runs = 0
    async with aiohttp.ClientSession() as session:
        tasks = [{"id": f"t{i}", "query": f"what is {i} * 3"} for i in range(400)]
        async with session.post(f"{base}/v1/batches", json={"tasks": tasks, "workers": 4}) as r:
            assert r.status == 202, await r.text()
        for i in range(500):  # bounded; the test stops it sooner
            if stop.is_set():
                break
            query = ["search for exemplars", f"what is {i} + 1", "what is 1 / 0", "hello"][i % 4]
            async with session.post(f"{base}/v1/runs", json={"input": query}) as response:
                await response.read()
            runs += 1
            await asyncio.sleep(0.05)
    return runs


def _shows_figures(text: str) -> bool:
    return all(p in text for p in ("Runs", "Tokens & spend", "Batches", "Health")) and (
        "invoke_agent" in text
    )


async def test_top_in_tmux_shows_the_panels_and_switches_views() -> None:
    gone = f"http://127.0.0.1:{free_port()}/metrics"  # nothing listens: shown DOWN
    # the model: 50 ms an answer, one request in five a 503 (retried; a few give up)
    behavior = ModelBehavior(latency=0.05, error_rate=0.2, fail_status=503, seed=7)
    async with (
        BuiltinModelServer(behavior) as model,
        _serve(OPENAI_BASE_URL=model.base_url, OPENAI_API_KEY="sk-test") as service,
    ):
        async with aiohttp.ClientSession() as session:
            await wait_until_ready(session, f"{service.base}/readyz", seconds=60)
        top = [sys.executable, "-m", "agentwatch.runtime.cli", "top", "--interval", "1"]
        top += ["--url", f"{service.base}/metrics", "--url", gone, "--timeout", "1"]
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in _child_env().items())
        # the shell stays after top quits and says how it ended
        command = f"env {env} {shlex.join(top)}; echo top-exited-$?; sleep 60"
        stop = asyncio.Event()
        workload = asyncio.create_task(_workload(service.base, stop))
        try:
            with tmux_session(command) as tmux:
                text = await tmux.wait_for("the panels", _shows_figures)
                assert "all targets summed" in text
                assert "view: operations" in text
                assert f"{gone} DOWN" in text
                assert "chat " in text  # a row of the operations table

                tmux("send-keys", "-t", "top", "t")
                text = await tmux.wait_for("the tools view", lambda s: "view: tools" in s)
                await tmux.wait_for("a tool row", lambda s: "calculator" in s and "search" in s)

                tmux("send-keys", "-t", "top", "m")
                await tmux.wait_for("the models view", lambda s: "view: models" in s)
                tmux("send-keys", "-t", "top", "b")
                await tmux.wait_for(
                    "the batches view",
                    lambda s: "view: batches" in s and "Batch tasks by status" in s,
                )
                tmux("send-keys", "-t", "top", "Tab")
                await tmux.wait_for(
                    "the first target alone", lambda s: f"{service.base}/metrics  view" in s
                )
                tmux("send-keys", "-t", "top", "Tab")
                await tmux.wait_for("the target that is gone", lambda s: "no figures: DOWN" in s)
                tmux("send-keys", "-t", "top", "Tab", "o")
                await tmux.wait_for(
                    "all summed again",
                    lambda s: "all targets summed" in s and "view: operations" in s
                    and _shows_figures(s),
                )  # fmt: skip
                if CAPTURE:  # a screen with some history in its sparklines
                    await asyncio.sleep(20)
                capture = tmux.screen()
                tmux("send-keys", "-t", "top", "q")
                await tmux.wait_for("top's exit", lambda s: "top-exited-0" in s)
        finally:
            stop.set()
            runs = await asyncio.wait_for(workload, timeout=60)
    assert runs > 0
    _save(capture)


def _child_env() -> dict[str, str]:
    """What top needs from this process's environment (PYTHONPATH under wt.sh)."""
    keep = ("PATH", "PYTHONPATH", "HOME", "VIRTUAL_ENV")
    return {k: os.environ[k] for k in keep if k in os.environ} | {"LANG": "C.UTF-8"}


@asynccontextmanager
async def _serve(**env: str) -> AsyncIterator[ServiceProcess]:
    with serve_process(**env) as service:
        yield service


def _save(screen: str) -> None:
    if CAPTURE:
        lines = [line.rstrip() for line in screen.splitlines()]
        Path(CAPTURE).write_text("\n".join(lines).rstrip("\n") + "\n")
