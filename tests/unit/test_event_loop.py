"""event_loop.py: the loop of the processes agentwatch owns, uvloop's by default."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentwatch.runtime.cli import event_loop
from agentwatch.runtime.cli.event_loop import AGENTWATCH_EVENT_LOOP, loop_factory
from agentwatch.telemetry import ConfigurationError

uvloop = pytest.importorskip("uvloop")


async def running_loop() -> type[Any]:
    return type(asyncio.get_running_loop())


@pytest.mark.parametrize("value", ["", "uvloop", " UVLoop "])
def test_uvloop_is_the_default_and_can_be_named(value: str) -> None:
    env = {AGENTWATCH_EVENT_LOOP: value} if value else {}
    assert event_loop.run(running_loop(), loop_factory(env)) is uvloop.Loop


def test_asyncios_own_loop_when_asked_made_as_asyncio_run_makes_it() -> None:
    factory = loop_factory({AGENTWATCH_EVENT_LOOP: "asyncio"})
    assert factory is None  # asyncio.Runner's own: the policy's loop, set as current
    loop_type = event_loop.run(running_loop(), factory)
    assert issubclass(loop_type, asyncio.BaseEventLoop)
    assert not issubclass(loop_type, uvloop.Loop)


def test_another_name_is_refused_as_given() -> None:
    with pytest.raises(ConfigurationError, match="AGENTWATCH_EVENT_LOOP=' Trio ': must be one"):
        loop_factory({AGENTWATCH_EVENT_LOOP: " Trio "})


def test_without_uvloop_the_default_falls_back_and_a_request_for_it_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert loop_factory({}) is None
    with pytest.raises(ConfigurationError, match="uvloop is not installed"):
        loop_factory({AGENTWATCH_EVENT_LOOP: "uvloop"})


@pytest.mark.parametrize(
    "command",
    [
        ["run", "what is 2 + 2"],
        ["serve", "--port", "0"],
        ["serve", "--port", "0", "--workers", "2"],  # once, before any worker starts
        ["batch", "missing-tasks.jsonl", "--out", "results.jsonl"],
        ["worker", "--redis", "redis://127.0.0.1:9"],
    ],
)
def test_the_commands_refuse_an_unknown_loop_first_in_one_line(
    command: list[str], tmp_path: Path
) -> None:
    """Every command that makes its loop through event_loop asks for it before anything
    else: exit 2 and one line naming the setting, no traceback, nothing started."""
    done = subprocess.run(
        [sys.executable, "-m", "agentwatch.runtime.cli", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, AGENTWATCH_EVENT_LOOP: "trio"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("AGENTWATCH_EVENT_LOOP='trio'") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())  # no results file begun
