"""Redis for tests: a private redis-server (an ephemeral loopback port, no persistence,
nothing kept on disk, stopped at the end; ``restart()`` gives an empty Redis on the same
port), and `agentwatch worker` processes started against it."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.helpers import cli_env, free_port


class RedisServer:
    def __init__(self, port: int, workdir: str) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server not found: `make tools` installs Debian's")
        self._process = subprocess.Popen(
            [
                binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self._workdir,
                "--logfile", "", "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # bounded: until it answers PING
            if self._pings():
                return
            assert self._process.poll() is None, "redis-server exited at start"
            time.sleep(0.02)
        raise AssertionError(f"redis-server on port {self.port} did not answer within 20 s")

    def _pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()  # no persistence: nothing to save
            self._process.wait(timeout=10)
            self._process = None

    def restart(self) -> None:
        """Down, then up again on the same port without any of its data."""
        self.stop()
        self.start()


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="agentwatch-redis-") as workdir:
        server = RedisServer(free_port(), workdir)
        server.start()
        try:
            yield server
        finally:
            server.stop()


AGENTWATCH = [sys.executable, "-m", "agentwatch.runtime.cli"]
# a quiet worker's tasks are taken again after 2 s (30 s by default)
WORKER_ENV = {
    "AGENTWATCH_REDIS_VISIBILITY_TIMEOUT": "2",
    "OTEL_TRACES_EXPORTER": "none",
    "PYTHONFAULTHANDLER": "1",  # a worker that hangs shows where (SIGABRT)
}


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    output: IO[bytes]
    metrics_url: str = ""

    def wait_ready(self, seconds: float = 120) -> None:
        """Until it prints its ready line (the agent started), which names its /metrics."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # bounded
            self.output.seek(0)
            found = re.search(rb"metrics on (http://\S+/metrics)", self.output.read())
            if found:
                self.metrics_url = found.group(1).decode()
                return
            assert self.process.poll() is None, "the worker exited at start"
            time.sleep(0.1)
        raise AssertionError(f"worker not ready within {seconds} s")


@contextmanager
def workers(url: str, count: int, concurrency: int = 4, **env: str) -> Iterator[list[Worker]]:
    """``count`` worker processes, each with a free /metrics port and ``env``; stopped
    on exit."""
    with ExitStack() as stack:
        started = []
        for _ in range(count):
            output = stack.enter_context(tempfile.TemporaryFile())
            process = subprocess.Popen(
                [*AGENTWATCH, "worker", "--redis", url, "--concurrency", str(concurrency),
                 "--metrics-port", "0"],
                env=cli_env(**(WORKER_ENV | env)),
                stdout=output,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            started.append(Worker(process, output))
        try:
            yield started
        finally:
            for worker in started:
                if worker.process.poll() is None:
                    worker.process.terminate()
            for worker in started:
                stop(worker)


def stop(worker: Worker) -> None:
    """Wait for a worker told to stop. One that is still running 60 s after SIGTERM
    (seen in CI after a batch: a heartbeat whose cancellation Python 3.11's wait_for
    lost, fixed; test_redis_worker_stops.py) is made to print its threads' stacks
    (faulthandler, SIGABRT), which the test's output shows, then killed: the test's own
    assertions stand or fall on their own."""
    try:
        worker.process.wait(timeout=60)
        return
    except subprocess.TimeoutExpired:
        pass
    worker.process.send_signal(signal.SIGABRT)
    try:
        worker.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        worker.process.wait()
    worker.output.seek(0)
    said = worker.output.read().decode(errors="replace")[-8000:]
    print(f"WORKER HUNG: still running 60 s after SIGTERM; its output:\n{said}", file=sys.stderr)


def write_tasks(path: Path, count: int) -> None:
    path.write_text(
        "".join(
            json.dumps({"id": f"task-{i}", "query": f"what is {i} + 1", "priority": i % 3}) + "\n"
            for i in range(count)
        )
    )
