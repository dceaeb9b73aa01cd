"""The commands that listen: ``agentwatch serve`` (the service), ``agentwatch model`` (the
builtin model alone), ``agentwatch demo`` (the service on a loopback port, driven by the
demo workload of demo.py), and how a failure to listen is told (``listening``: one line
naming the flag or variable to change, exit 5)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from aiohttp import web

from agentwatch.telemetry import setup_telemetry
from agentwatch.telemetry.setup import check_telemetry_settings

from ..builtin_model import ModelBehavior, create_model_app
from ..http.serving import BindError, run_service
from ..service.app import create_app
from ..service.federation import federated, own_metrics_ctx
from ..settings import AGENTWATCH_HOST, AGENTWATCH_PORT, RuntimeSettings
from . import demo
from .event_loop import loop_factory
from .exits import EXIT_CANNOT_LISTEN, EXIT_OK, EXIT_USAGE, CliError
from .heap import settle_heap
from .workers import WorkerRole, supervise

MODEL_PORT: Final = 8081


SHUTDOWN_TIMEOUT: Final = 10.0
"""SIGTERM: in-flight runs get this long, then are cancelled."""


def serve_command(args: argparse.Namespace) -> int:
    """``agentwatch serve``: the service until SIGTERM/SIGINT (``--workers N``: N
    processes serving the port, workers.py)."""
    settings = _settings(args)
    loop = loop_factory()  # refused once, before any worker starts (--workers N)
    model = "the builtin model" if settings.uses_builtin_model else settings.model
    role = WorkerRole.from_env()

    def serving(port: int) -> str:
        return f"agentwatch serving on http://{settings.host}:{port} with {model}"

    where = {
        "host_from": _origin("--host", args.host, AGENTWATCH_HOST),
        "port_from": _origin("--port", args.port, AGENTWATCH_PORT),
    }
    count = getattr(args, "workers", 1)
    if role is None and count > 1:
        check_telemetry_settings()  # each worker's setup would refuse it: refuse it once
        with listening(settings.host, settings.port, **where):
            return supervise(
                settings.host,
                settings.port,
                count,
                shutdown_timeout=SHUTDOWN_TIMEOUT,
                serving=lambda port: f"{serving(port)} ({count} worker processes)",
            )

    telemetry = setup_telemetry()
    source = None
    if role is not None:  # one of --workers N: /metrics answers for every worker
        source = federated(telemetry, role.directory, role.index, role.count)
    app = create_app(settings, telemetry, metrics_source=source)
    app.on_startup.append(_settle_heap)
    if role is not None:
        app.cleanup_ctx.append(own_metrics_ctx(telemetry.registry, role.socket_path))
        app.on_response_prepare.append(role.sign)
        app.cleanup_ctx.append(role.orphan_watch)
    try:
        with listening(settings.host, settings.port, **where):
            run_service(  # aiohttp with the connection limits of runtime/http/serving.py
                app,
                host=settings.host,
                port=settings.port,
                on_listening=(
                    (lambda port: print(serving(port), flush=True))
                    if role is None
                    else role.listening
                ),
                shutdown_timeout=SHUTDOWN_TIMEOUT,
                reuse_port=role is not None,
                loop_factory=loop,  # uvloop's by default (event_loop.py)
            )
    finally:
        telemetry.shutdown()  # AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT
    return EXIT_OK


def model_command(args: argparse.Namespace) -> int:
    """``agentwatch model``: the builtin OpenAI-compatible model, with the flags' faults
    and the rate limits of ``AGENTWATCH_BUILTIN_RATE_LIMIT_RPM`` / ``_TPM``."""
    settings = RuntimeSettings.from_env()
    behavior = ModelBehavior(
        latency=args.latency,
        time_to_first_token=args.ttft,
        tokens_per_second=args.tokens_per_second,
        error_rate=args.error_rate,
        fail_status=args.fail_status,
        seed=args.seed,
        rate_limit_rpm=settings.builtin_rate_limit_rpm,
        rate_limit_tpm=settings.builtin_rate_limit_tpm,
    )
    host = "127.0.0.1" if args.host is None else args.host
    port = MODEL_PORT if args.port is None else args.port
    with listening(
        host,
        port,
        host_from=_origin("--host", args.host, None),
        port_from=_origin("--port", args.port, None),
    ):
        run_service(
            create_model_app(behavior),
            host=host,
            port=port,
            on_listening=lambda bound: print(
                f"builtin model on http://{host}:{bound}/v1", flush=True
            ),
        )
    return EXIT_OK


def demo_command(args: argparse.Namespace) -> int:
    """``agentwatch demo``: the demo workload against the service on ``--port``."""
    with listening("127.0.0.1", args.port, host_from="", port_from=f"--port {args.port}"):
        return asyncio.run(demo.main(demo.setup(), port=args.port))


def _settings(args: argparse.Namespace) -> RuntimeSettings:
    """The environment's settings with the flags the user gave on top; an invalid value
    is reported under the name the user typed (``--port``, or ``AGENTWATCH_PORT``)."""
    flags = {"host": ("--host", args.host), "port": ("--port", args.port)}
    given = {name: value for name, (_, value) in flags.items() if value is not None}
    sources = {name: flag for name, (flag, value) in flags.items() if value is not None}
    return RuntimeSettings.from_env(overrides=given, sources=sources)


def _origin(flag: str, flag_value: object, variable: str | None) -> str:
    """Where a value came from, as the user would recognise it."""
    if flag_value is not None:
        return f"{flag} {flag_value}"
    if variable and os.environ.get(variable, "").strip():
        return f"{variable}={os.environ[variable].strip()}"
    return f"the default; choose another with {flag}"


@contextmanager
def listening(host: str, port: int, *, host_from: str, port_from: str) -> Iterator[None]:
    """Turn a failure to bind ``host:port`` (a ``BindError``, raised by the bind alone)
    into one line naming the flag to change. Any other error, an ``OSError`` of the
    app's start-up included, is not the address's fault and passes through."""
    try:
        yield
    except BindError as bind:
        exc = bind.__cause__
        if isinstance(exc, socket.gaierror):
            raise CliError(
                f"cannot listen on {host!r} ({host_from}): {exc.strerror or exc}",
                EXIT_CANNOT_LISTEN,
            ) from exc
        if isinstance(exc, OverflowError):  # a port outside 0-65535 that got past the parser
            raise CliError(
                f"cannot listen on port {port} ({port_from}): {exc}", EXIT_USAGE
            ) from exc
        code = exc.errno if isinstance(exc, OSError) else None
        origin = host_from if code == errno.EADDRNOTAVAIL and host_from else port_from
        reason = os.strerror(code).lower() if code else str(exc)
        raise CliError(
            f"cannot listen on {host}:{port} ({origin}): {reason}", EXIT_CANNOT_LISTEN
        ) from exc


async def _settle_heap(app: web.Application) -> None:
    """Once the runtime has started (heap.py: start-up's objects out of the collector's
    reach). Only the service's own process does this; an application embedding
    ``create_app`` decides for itself."""
    settle_heap()
