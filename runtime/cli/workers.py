"""``agentwatch serve --workers N``: N processes serving one port.

The parent process serves nothing. It checks that the address is free (the same
one-line errors as one process), keeps the port reserved (a socket bound with
``SO_REUSEPORT`` that never listens, so ``--port 0`` means one port for all), and starts
N workers: each the ordinary ``agentwatch serve`` with ``AGENTWATCH_SERVE_WORKER``
telling it its index, the count and the directory the workers share. Each listens on
the port with ``SO_REUSEPORT`` (the kernel spreads new connections among them) and
serves its own series on a Unix socket in that directory, so that ``/metrics`` on any
of them answers for all (``service/federation.py``).

- Ready: once every worker listens on the port, the parent prints the one "serving" line.
- SIGTERM / SIGINT: passed to every worker, which drains as one process does
  (requests in flight get the shutdown timeout); a worker still running well after
  that is killed. Exit 0.
- A parent that is killed outright (SIGKILL: it cannot pass a signal on) leaves no
  worker serving alone: each notices within a second and drains.
- A worker that dies (a crash, the OOM killer, SIGKILL) is started again, with a line
  on stderr. A worker that dies 5 times within 30 s is not: the parent stops the others
  and exits 1 (a fault that restarting cannot fix, such as a bad setting).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from ..http.serving import BindError
from ..service.federation import peer_path, ready_path
from .exits import EXIT_OK, EXIT_USAGE, CliError

AGENTWATCH_SERVE_WORKER: Final = "AGENTWATCH_SERVE_WORKER"
"""``<index>/<count>/<parent pid>/<directory>``: set by the parent for each worker."""

WORKER_HEADER: Final = "X-Agentwatch-Worker"
READY_TIMEOUT: Final = 120.0
RESTARTS_ALLOWED: Final = 5
RESTART_WINDOW: Final = 30.0
EXIT_WORKERS_FAILING: Final = 1


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """What a worker process is told by its parent."""

    index: int
    count: int
    parent: int
    directory: str

    @classmethod
    def from_env(cls) -> WorkerRole | None:
        raw = os.environ.get(AGENTWATCH_SERVE_WORKER, "")
        if not raw:
            return None
        index, count, parent, directory = raw.split("/", 3)
        return cls(int(index), int(count), int(parent), directory)

    @property
    def socket_path(self) -> str:
        return peer_path(self.directory, self.index)

    async def sign(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every answer says which worker gave it (``X-Agentwatch-Worker``)."""
        response.headers[WORKER_HEADER] = str(self.index)

    async def orphan_watch(self, app: web.Application) -> AsyncIterator[None]:
        """A cleanup context: a worker whose parent is gone (killed outright: it could
        not pass a signal on) drains and exits as if told to, never serving alone; one
        whose parent died while it was starting, at once."""

        async def watch() -> None:  # no event tells a process its parent died: look
            while True:
                if os.getppid() != self.parent:
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                await asyncio.sleep(1.0)

        task = asyncio.create_task(watch())
        try:
            yield
        finally:
            task.cancel()

    def listening(self, port: int) -> None:
        """Tell the parent this worker serves the public port."""
        with open(ready_path(self.directory, self.index), "w"):
            pass


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket that holds ``host``:``port`` for the workers (bound with
    ``SO_REUSEPORT``, never listening: it takes no connection). ``BindError`` when the
    address cannot be used, or something else listens there already."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.create_server((host, port), family=family):  # nobody listens there
            pass
        held = socket.socket(family, socket.SOCK_STREAM)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind((host, port))
    except (OSError, OverflowError) as exc:
        raise BindError(host, port, exc) from exc
    return held


class Supervisor:
    """The parent of ``count`` workers serving ``host``:``port``."""

    def __init__(
        self,
        host: str,
        port: int,
        count: int,
        *,
        shutdown_timeout: float,
        command: list[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.count = count
        self.shutdown_timeout = shutdown_timeout
        self.command = command or [sys.executable, "-m", "agentwatch.runtime.cli", "serve"]
        self.directory = tempfile.mkdtemp(prefix="agentwatch-serve-")
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * count
        self.deaths: deque[float] = deque(maxlen=RESTARTS_ALLOWED)
        self.stopping = threading.Event()

    def _start(self, index: int) -> None:
        env = {
            **os.environ,
            AGENTWATCH_SERVE_WORKER: f"{index}/{self.count}/{os.getpid()}/{self.directory}",
        }
        args = [*self.command, "--host", self.host, "--port", str(self.port)]
        self.workers[index] = subprocess.Popen(args, env=env)

    def run(self, on_ready: Callable[[], None]) -> int:
        previous = {
            sig: signal.signal(sig, lambda *_: self.stopping.set())
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for index in range(self.count):
                self._start(index)
            if not self._ready():
                return self._stop(EXIT_WORKERS_FAILING)
            on_ready()
            while not self.stopping.wait(0.2):
                if not self._restart_dead():
                    return self._stop(EXIT_WORKERS_FAILING)
            return self._stop(EXIT_OK)
        except BaseException:  # never leave the workers behind
            self._stop(EXIT_WORKERS_FAILING)
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(self.directory, ignore_errors=True)

    def _ready(self) -> bool:
        """Wait until every worker listens (one that dies meanwhile is started again);
        False when they keep dying or do not listen within ``READY_TIMEOUT``."""
        deadline = time.monotonic() + READY_TIMEOUT
        paths = [ready_path(self.directory, i) for i in range(self.count)]
        while time.monotonic() < deadline and not self.stopping.is_set():
            if not self._restart_dead():
                return False
            if all(os.path.exists(p) for p in paths):
                return True
            time.sleep(0.05)
        if not self.stopping.is_set():
            print(
                f"agentwatch: the workers did not all listen within {READY_TIMEOUT:g} s",
                file=sys.stderr,
                flush=True,
            )
            return False
        return True  # a signal while starting: stop as asked

    def _restart_dead(self) -> bool:
        """Start again every worker that died; False when they keep dying."""
        for index, worker in enumerate(self.workers):
            code = worker.poll() if worker is not None else None
            if code is None or self.stopping.is_set():
                continue
            now = time.monotonic()
            self.deaths.append(now)
            if len(self.deaths) == RESTARTS_ALLOWED and now - self.deaths[0] < RESTART_WINDOW:
                print(
                    f"agentwatch: workers died {RESTARTS_ALLOWED} times in "
                    f"{RESTART_WINDOW:g} s (worker {index}: {_how(code)}); stopping",
                    file=sys.stderr,
                    flush=True,
                )
                return False
            print(
                f"agentwatch: worker {index} {_how(code)}; starting it again",
                file=sys.stderr,
                flush=True,
            )
            self._start(index)
        return True

    def _stop(self, code: int) -> int:
        running = [w for w in self.workers if w is not None and w.poll() is None]
        for worker in running:
            worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout + 15.0
        for worker in running:
            try:
                worker.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        return code


def _how(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with {code}"


def supervise(
    host: str, port: int, count: int, *, shutdown_timeout: float, serving: Callable[[int], str]
) -> int:
    """Run ``count`` workers on ``host``:``port`` until told to stop (``serving(port)``:
    the line printed once they all serve)."""
    if count < 1:
        raise CliError(f"--workers must be at least 1, got {count}", EXIT_USAGE)
    with reserve_port(host, port) as held:
        port = held.getsockname()[1]  # --port 0: the one port every worker binds
        supervisor = Supervisor(host, port, count, shutdown_timeout=shutdown_timeout)
        return supervisor.run(lambda: print(serving(port), flush=True))
