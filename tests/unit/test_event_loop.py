"""event_loop.py: the loop of the processes agentwatch owns, uvloop's by default."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest
import uvloop

from agentwatch.runtime.cli import event_loop
from agentwatch.runtime.cli.event_loop import AGENTWATCH_EVENT_LOOP, loop_factory
from agentwatch.telemetry import ConfigurationError


async def running_loop() -> type[Any]:
    return type(asyncio.get_running_loop())


@pytest.mark.parametrize("value", ["", "uvloop", " UVLoop "])
def test_uvloop_is_the_default_and_can_be_named(value: str) -> None:
    env = {AGENTWATCH_EVENT_LOOP: value} if value else {}
    assert event_loop.run(running_loop(), env) is uvloop.Loop


def test_asyncios_own_loop_when_asked() -> None:
    loop_type = event_loop.run(running_loop(), {AGENTWATCH_EVENT_LOOP: "asyncio"})
    assert issubclass(loop_type, asyncio.BaseEventLoop)
    assert not issubclass(loop_type, uvloop.Loop)


def test_another_name_is_refused_and_its_coroutine_closed() -> None:
    main = running_loop()
    with pytest.raises(ConfigurationError, match="AGENTWATCH_EVENT_LOOP='trio'"):
        event_loop.run(main, {AGENTWATCH_EVENT_LOOP: "trio"})
    assert main.cr_frame is None  # closed: no "never awaited" warning


def test_without_uvloop_the_default_falls_back_and_a_request_for_it_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert loop_factory({}) is asyncio.new_event_loop
    with pytest.raises(ConfigurationError, match="uvloop is not installed"):
        loop_factory({AGENTWATCH_EVENT_LOOP: "uvloop"})


@pytest.mark.parametrize("command", [["run", "what is 2 + 2"], ["serve", "--port", "0"]])
def test_the_commands_refuse_an_unknown_loop_in_one_line(command: list[str]) -> None:
    """``run`` and ``serve`` make their loop through event_loop: exit 2 and one line
    naming the setting, no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "agentwatch.runtime.cli", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, AGENTWATCH_EVENT_LOOP: "trio"},
    )
    assert done.returncode == 2, done.stderr
    assert "AGENTWATCH_EVENT_LOOP='trio'" in done.stderr
    assert "Traceback" not in done.stderr
