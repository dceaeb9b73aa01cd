"""The `agentwatch` console script meets ordinary mistakes as a new user makes them: a
port in use, a port out of range, a model that cannot be reached. Each is one line on
stderr naming the problem and the flag or variable the user used, a documented exit
code, and never a traceback. Real processes, real sockets, loopback only; a provider
client's failure, in process, as each kind is told."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from agentwatch.runtime.cli import main as cli
from agentwatch.runtime.cli.main import (
    EXIT_CANNOT_LISTEN,
    EXIT_MODEL_FAILED,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
)
from agentwatch.runtime.provider_errors import FailureKind, ProviderFailure, register
from tests.helpers import cli_env, free_port
from tests.unit.test_provider_errors import httpx_status

pytestmark = pytest.mark.integration

AGENTWATCH = str(Path(sys.executable).parent / "agentwatch")  # the installed console script


def agentwatch(*args: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENTWATCH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,  # a command that should fail at once must not hang the suite
        env=cli_env(**env),
        check=False,
    )


def error_line(out: subprocess.CompletedProcess[str], prefix: str) -> str:
    """The one stderr line starting with ``prefix``; no traceback anywhere."""
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, out.stderr
    return lines[0]


def wait_for_listener(port: int, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    """Poll until something accepts on ``port`` (bounded), failing if ``process`` exits."""
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds * 10)):  # bounded
        assert process.poll() is None, "the model process exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    raise AssertionError(f"nothing listened on {port} within {seconds} s")


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_serve_on_a_port_in_use_names_the_flag(taken_port: int) -> None:
    out = agentwatch("serve", "--port", str(taken_port))
    assert out.returncode == EXIT_CANNOT_LISTEN, out.stderr
    line = error_line(out, "agentwatch serve:")
    assert line == (
        f"agentwatch serve: cannot listen on 127.0.0.1:{taken_port} (--port {taken_port}): "
        "address already in use"
    )
    assert "serving on" not in out.stdout  # it never said it was serving


def test_serve_on_a_port_in_use_from_the_environment_names_the_variable(
    taken_port: int,
) -> None:
    out = agentwatch("serve", AGENTWATCH_PORT=str(taken_port))
    assert out.returncode == EXIT_CANNOT_LISTEN, out.stderr
    line = error_line(out, "agentwatch serve:")
    assert f"(AGENTWATCH_PORT={taken_port}): address already in use" in line


def test_model_on_a_port_in_use_names_the_flag(taken_port: int) -> None:
    out = agentwatch("model", "--port", str(taken_port))
    assert out.returncode == EXIT_CANNOT_LISTEN, out.stderr
    line = error_line(out, "agentwatch model:")
    assert line == (
        f"agentwatch model: cannot listen on 127.0.0.1:{taken_port} (--port {taken_port}): "
        "address already in use"
    )


def test_model_port_out_of_range_is_a_usage_error() -> None:
    out = agentwatch("model", "--port", "70000", timeout=60)
    assert out.returncode == EXIT_USAGE
    assert out.stderr == "agentwatch model: --port must be 0-65535, got 70000\n"


def test_serve_port_out_of_range_blames_the_flag_not_the_variable() -> None:
    out = agentwatch("serve", "--port", "99999", timeout=60)
    assert out.returncode == EXIT_USAGE
    assert out.stderr == "agentwatch serve: --port must be 0-65535, got 99999\n"


def test_serve_port_out_of_range_from_the_environment_names_the_variable() -> None:
    out = agentwatch("serve", timeout=60, AGENTWATCH_PORT="99999")
    assert out.returncode == EXIT_USAGE
    line = error_line(out, "agentwatch serve:")
    assert line == "agentwatch serve: AGENTWATCH_PORT must be 0-65535, got 99999"


def test_run_with_the_model_unreachable_is_one_line_naming_the_variable() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    out = agentwatch(
        "run",
        "what is 1 + 1",
        timeout=120,
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL=url,
        AGENTWATCH_RETRY_MAX_TRIES="2",
    )
    assert out.returncode == EXIT_MODEL_FAILED, out.stderr
    line = error_line(out, "agentwatch run:")
    assert line.startswith(f"agentwatch run: cannot reach the model at {url} (OPENAI_BASE_URL): ")
    assert "gave up after 2 attempts" in line
    assert "sk-test" not in out.stderr


def test_run_with_a_model_that_refuses_the_key_says_so() -> None:
    port = free_port()
    model = subprocess.Popen(
        [AGENTWATCH, "model", "--port", str(port), "--error-rate", "1", "--fail-status", "401"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
    )
    try:
        wait_for_listener(port, model)
        out = agentwatch(
            "run",
            "what is 1 + 1",
            timeout=120,
            OPENAI_API_KEY="sk-test",
            OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1",
        )
    finally:
        model.terminate()
        model.wait(timeout=30)
    assert out.returncode == EXIT_MODEL_FAILED, out.stderr
    line = error_line(out, "agentwatch run:")
    assert "answered HTTP 401" in line
    assert line.endswith("check OPENAI_API_KEY")


def test_version_comes_from_the_installed_distribution() -> None:
    from importlib.metadata import version

    out = agentwatch("--version", timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"agentwatch {version('agentwatch')}\n"


class QuotaExhausted(Exception):
    """A made-up provider's error, a model failure once its classifier is registered."""


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (
            httpx_status(503),
            EXIT_MODEL_FAILED,
            "the model at the builtin model answered HTTP 503: HTTP 503",
        ),
        (
            httpx.ConnectError("All connection attempts failed"),
            EXIT_MODEL_FAILED,
            "cannot reach the model at the builtin model: All connection attempts failed",
        ),
        (
            aiohttp.ServerTimeoutError("slow"),
            EXIT_MODEL_FAILED,
            "the model at the builtin model did not answer in time",
        ),
        (
            QuotaExhausted("quota exhausted"),
            EXIT_MODEL_FAILED,
            "the model at the builtin model failed: quota exhausted",
        ),
        # Python's own errors blame nobody: a closed stdout is not the model's fault.
        (BrokenPipeError(32, "Broken pipe"), EXIT_UNEXPECTED, "unexpected error: BrokenPipeError"),
        (TimeoutError(), EXIT_UNEXPECTED, "unexpected error: TimeoutError"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_any_providers_failure_is_a_model_error_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: Exception,
    code: int,
    line: str,
) -> None:
    """Every provider client's failure (not only OpenAI's SDK) is exit 6 with the line
    its classification calls for (runtime/provider_errors.py)."""
    for variable in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "AGENTWATCH_DEBUG"):
        monkeypatch.delenv(variable, raising=False)

    def failing_run(args: object) -> int:
        raise error

    monkeypatch.setattr(cli, "run_command", failing_run)  # what `run` calls, looked up by main()
    unregister = register(QuotaExhausted, lambda e: ProviderFailure.of(FailureKind.OTHER))
    try:
        assert cli.main(["run", "what is 1 + 1"]) == code
    finally:
        unregister()
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"agentwatch run: {line}"), stderr
    assert len(stderr.splitlines()) == 1, stderr
