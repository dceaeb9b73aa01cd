"""A private redis-server for tests: an ephemeral loopback port, no persistence, nothing
kept on disk, stopped at the end; ``restart()`` gives an empty Redis on the same port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers import free_port


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
