"""The ``agentwatch`` command line: ``demo | serve | run | batch | report | model``.

A user's ordinary mistake (a port in use, a bad flag value, a model that cannot be
reached) is one line on stderr naming the problem and the flag or variable they used,
and a documented exit code (``EXIT_CODES``); only a bug prints a traceback, and only
with ``AGENTWATCH_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import math
import os
import socket
import sys
import traceback
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import aclosing, contextmanager
from importlib import metadata
from pathlib import Path
from typing import Final, NoReturn

from aiohttp import web

from agentwatch.telemetry import (
    AgentwatchError,
    Telemetry,
    fetch_metrics_text,
    format_report,
    setup_telemetry,
    stats_from_text,
)

from ..agents.agent import AgentRunError, RunTimeoutError
from ..agents.agent_runtime import AgentRuntime
from ..builtin_model import ModelBehavior, create_model_app
from ..events import RunEvent, RunFinished, TextDelta, ToolCallFinished, ToolCallStarted
from ..http.serving import BindError, run_service
from ..provider_errors import PYTHON, FailureKind, ProviderFailure, classify
from ..results import trace_line
from ..service.app import create_app
from ..settings import (
    AGENTWATCH_HOST,
    AGENTWATCH_PORT,
    AGENTWATCH_RUN_TIMEOUT,
    OPENAI_API_KEY,
    OPENAI_BASE_URL,
    RuntimeSettings,
)
from . import demo

# Exit codes: documented in `agentwatch --help` (EXIT_CODES) and the README.
EXIT_OK: Final = 0
EXIT_UNEXPECTED: Final = 1  # a bug: one line, the traceback with AGENTWATCH_DEBUG=1
EXIT_USAGE: Final = 2  # a flag, a variable or an input file the command cannot use
# 3 (stopped early), 4 (tasks failed) and 7 (--out unusable) are the batch's own, defined
# with it in batch/cli.py (EXIT_STOPPED, EXIT_TASKS_FAILED, EXIT_RESULTS_FILE).
EXIT_CANNOT_LISTEN: Final = 5  # serve, model, demo: address in use, not permitted, unknown
EXIT_MODEL_FAILED: Final = 6  # run: the model unreachable or refusing, or the run's limit hit
EXIT_INTERRUPTED: Final = 130  # Ctrl-C

EXIT_CODES: Final = """\
exit codes:
  0    success
  1    unexpected error (a bug); AGENTWATCH_DEBUG=1 prints the traceback
  2    bad usage or configuration: a flag, an environment variable, an input file
  3    batch stopped early (SIGINT/SIGTERM); run the same command again to resume
  4    batch finished, but some tasks failed or timed out
  5    serve/model/demo cannot listen: address in use, not permitted, or unknown host
  6    run: the model could not be reached or refused, or the run hit its time or
       step limit
  7    batch: --out cannot be used (not a regular file, in use by another batch, or
       a write failed)
  130  interrupted (Ctrl-C)
"""

AGENTWATCH_DEBUG: Final = "AGENTWATCH_DEBUG"


class CliError(AgentwatchError):
    """An ordinary mistake or condition, told in one line with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _report(args: argparse.Namespace) -> int:
    try:
        text = fetch_metrics_text(args.url, timeout=args.timeout)
    except (OSError, ValueError) as exc:
        print(f"agentwatch report: cannot read {args.url}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        rows = stats_from_text(text)
    except ValueError:
        print(f"agentwatch report: {args.url} is not a Prometheus metrics page", file=sys.stderr)
        return EXIT_USAGE
    print(format_report(rows, title=f"Performance report ({args.url})"), end="")
    return 0


def _demo(args: argparse.Namespace) -> int:
    with _listening("127.0.0.1", args.port, host_from="", port_from=f"--port {args.port}"):
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
def _listening(host: str, port: int, *, host_from: str, port_from: str) -> Iterator[None]:
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


async def _freeze_startup_objects(app: web.Application) -> None:
    """Move everything imported and built at start-up out of the garbage collector's
    reach: a full collection over LangChain's ~190,000 start-up objects took ~85 ms
    here, a stall every in-flight run would feel. Only the service's own process does
    this; an application embedding ``create_app`` decides for itself."""
    gc.collect()
    gc.freeze()


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    telemetry = setup_telemetry()
    model = "the builtin model" if settings.uses_builtin_model else settings.model
    serving = f"agentwatch serving on http://{settings.host}:{settings.port} with {model}"
    app = create_app(settings, telemetry)
    app.on_startup.append(_freeze_startup_objects)
    try:
        with _listening(
            settings.host,
            settings.port,
            host_from=_origin("--host", args.host, AGENTWATCH_HOST),
            port_from=_origin("--port", args.port, AGENTWATCH_PORT),
        ):
            run_service(  # aiohttp with the connection limits of runtime/serving.py
                app,
                host=settings.host,
                port=settings.port,
                on_listening=lambda: print(serving, flush=True),
                shutdown_timeout=10.0,  # SIGTERM: in-flight runs get this long, then cancelled
            )
    finally:
        telemetry.shutdown()  # AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT
    return 0


async def _run_once(
    settings: RuntimeSettings, telemetry: Telemetry, query: str, stream: bool
) -> int:
    async with AgentRuntime(settings, telemetry) as runtime:
        if stream:
            return await _typewriter(runtime.agent.astream(query))
        result = await runtime.agent.arun(query)
    for call in result.tool_calls:
        status = "failed" if call.error else "ok"
        print(f"[tool {call.name} {call.arguments} -> {status}]")
    print(result.output)
    usage = result.usage
    print(f"{trace_line(result)}  tokens: {usage.input_tokens} in, {usage.output_tokens} out")
    return 0


async def _typewriter(events: AsyncGenerator[RunEvent, None]) -> int:
    """Print the answer as it arrives, tool calls as they happen."""
    async with aclosing(events):
        async for event in events:
            if isinstance(event, TextDelta):
                print(event.text, end="", flush=True)
            elif isinstance(event, ToolCallStarted):
                print(f"[tool {event.name} {event.arguments}]", flush=True)
            elif isinstance(event, ToolCallFinished):
                status = "failed" if event.error else "ok"
                print(f"[tool {event.name} -> {status}: {event.result[:80]}]", flush=True)
            elif isinstance(event, RunFinished):
                usage, trace = event.result.usage, trace_line(event.result)
                print()
                print(f"{trace}  tokens: {usage.input_tokens} in, {usage.output_tokens} out")
    return 0


def _run(args: argparse.Namespace) -> int:
    settings = RuntimeSettings.from_env()
    telemetry = demo.setup()
    try:
        return asyncio.run(_run_once(settings, telemetry, args.query, args.stream))
    finally:
        telemetry.shutdown()  # AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT


def _batch(args: argparse.Namespace) -> int:
    from ..batch import (
        BatchInputError,
        BatchOptions,
        ResultFileError,
        check_results_path,
        read_tasks,
    )
    from .batch import (
        EXIT_RESULTS_FILE,
        error_line,
        exit_code,
        print_summary,
        run_batch,
        stderr_console,
    )

    console = stderr_console()
    out = Path(args.out)
    try:
        tasks = read_tasks(Path(args.tasks))
    except BatchInputError as exc:
        console.print(f"agentwatch batch: {exc}\nThe batch did not start.", markup=False)
        return EXIT_USAGE
    except OSError as exc:
        error_line(console, f"cannot read {args.tasks}: {exc.strerror or exc}")
        return EXIT_USAGE
    try:
        # before anything starts: a pipe or device never hangs us, the tasks stay intact
        check_results_path(out, Path(args.tasks))
    except ResultFileError as exc:
        error_line(console, f"--out: {exc}")
        return EXIT_RESULTS_FILE
    if not tasks:
        console.print(
            f"agentwatch batch: warning: {args.tasks} has no tasks; nothing to run",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )
        return EXIT_OK
    options = BatchOptions(
        workers=args.workers,
        concurrency=args.concurrency,
        task_timeout=args.timeout,
        retry_failed=args.retry_failed,
    )
    telemetry = demo.setup()
    try:
        summary, stopped = asyncio.run(
            run_batch(tasks, out, options, RuntimeSettings.from_env(), telemetry, console)
        )
    except ResultFileError as exc:  # in use by another batch, or a write failed
        error_line(console, f"{exc} (the batch stopped; what was written is kept)")
        return EXIT_RESULTS_FILE
    finally:
        telemetry.shutdown()  # AGENTWATCH_TELEMETRY_SHUTDOWN_TIMEOUT
    print_summary(summary, out, console)
    return exit_code(summary, stopped)


def _model(args: argparse.Namespace) -> int:
    behavior = ModelBehavior(
        latency=args.latency,
        time_to_first_token=args.ttft,
        tokens_per_second=args.tokens_per_second,
        error_rate=args.error_rate,
        fail_status=args.fail_status,
        seed=args.seed,
    )
    host = "127.0.0.1" if args.host is None else args.host
    port = MODEL_PORT if args.port is None else args.port
    listening = f"builtin model on http://{host}:{port}/v1"
    with _listening(
        host,
        port,
        host_from=_origin("--host", args.host, None),
        port_from=_origin("--port", args.port, None),
    ):
        run_service(
            create_model_app(behavior),
            host=host,
            port=port,
            on_listening=lambda: print(listening, flush=True),
        )
    return 0


MODEL_PORT: Final = 8081


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose bad-value errors are one line naming the flag:
    ``agentwatch serve: --port must be 0-65535, got 99999``."""

    def error(self, message: str) -> NoReturn:
        name, sep, problem = message.removeprefix("argument ").partition(": ")
        if message.startswith("argument ") and sep and problem.startswith("must "):
            self.exit(EXIT_USAGE, f"{self.prog}: {name} {problem}\n")
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _number(kind: Callable[[str], float], text: str, what: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def _port(text: str) -> int:
    value = int(_number(int, text, "a port number 0-65535"))
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(_number(int, text, "a whole number"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = _number(float, text, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value:g}")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(float, text, "a number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value:g}")
    return value


def _fraction(text: str) -> float:
    value = _number(float, text, "a number")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value:g}")
    return value


def _error_status(text: str) -> int:
    value = int(_number(int, text, "an HTTP status"))
    if not 400 <= value <= 599:
        raise argparse.ArgumentTypeError(f"must be an HTTP error status 400-599, got {value}")
    return value


def _whole(text: str) -> int:
    return int(_number(int, text, "a whole number"))


def _version() -> str:
    try:
        return metadata.version("agentwatch")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="agentwatch",
        description="An async agent runtime with observability built in. "
        "`agentwatch COMMAND --help` lists a command's options.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"agentwatch {_version()}", help="print the version"
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="one of:"
    )

    demo_cmd = commands.add_parser("demo", help="run the demo workload and print the report")
    demo_cmd.add_argument("--port", type=_port, default=0, help="service port (0: any free one)")
    demo_cmd.set_defaults(func=_demo)

    serve = commands.add_parser("serve", help="serve /v1/runs and /metrics")
    serve.add_argument("--host", help="bind address (default 127.0.0.1, or AGENTWATCH_HOST)")
    serve.add_argument("--port", type=_port, help="port (default 8080, or AGENTWATCH_PORT)")
    serve.set_defaults(func=_serve)

    run = commands.add_parser("run", help="run one query and print the answer and trace id")
    run.add_argument("query", help="the question for the agent, in quotes")
    run.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    run.set_defaults(func=_run)

    from .batch import BATCH_EPILOG

    batch = commands.add_parser(
        "batch",
        help="run a JSONL file of tasks with a progress bar",
        epilog=BATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("tasks", help='JSONL: {"id": ..., "query": ..., "priority": 0-9}')
    batch.add_argument(
        "--out",
        required=True,
        help="results JSONL, a regular file (resumed if it exists; one batch at a time)",
    )
    batch.add_argument(
        "--workers", type=_positive_int, default=5, help="tasks taken at once (default 5)"
    )
    batch.add_argument(
        "--concurrency",
        type=_positive_int,
        help="at most this many tasks run at once (default: workers)",
    )
    batch.add_argument(
        "--timeout", type=_positive_float, help="seconds per task (default: no limit)"
    )
    batch.add_argument(
        "--retry-failed",
        action="store_true",
        help="on resume, run the failed and timed-out tasks of --out again",
    )
    batch.set_defaults(func=_batch)

    report = commands.add_parser("report", help="print the performance report of a /metrics URL")
    report.add_argument(
        "--url",
        default="http://127.0.0.1:8080/metrics",
        help="the /metrics page to read (default %(default)s)",
    )
    report.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        help="seconds to wait for it (default %(default)s)",
    )
    report.set_defaults(func=_report)

    model = commands.add_parser("model", help="run the builtin OpenAI-compatible model alone")
    model.add_argument("--host", help="bind address (default 127.0.0.1)")
    model.add_argument("--port", type=_port, help=f"port (default {MODEL_PORT})")
    model.add_argument(
        "--latency", type=_non_negative_float, default=0.0, help="seconds per answer"
    )
    model.add_argument(
        "--ttft", type=_non_negative_float, default=0.0, help="seconds to first streamed token"
    )
    model.add_argument(
        "--tokens-per-second",
        type=_non_negative_float,
        default=0.0,
        help="streaming pace after the first token (0: as fast as possible)",
    )
    model.add_argument(
        "--error-rate",
        type=_fraction,
        default=0.0,
        help="share of requests that fail with --fail-status, 0-1 (default 0)",
    )
    model.add_argument(
        "--fail-status",
        type=_error_status,
        default=429,
        help="HTTP status of injected failures: 429 (with Retry-After) or a 5xx "
        "(default %(default)s)",
    )
    model.add_argument(
        "--seed", type=_whole, default=0, help="seed of the fault injection, for repeatable runs"
    )
    model.set_defaults(func=_model)
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"


def _root_cause(exc: BaseException) -> str:
    """The innermost explanation of a wrapped error ("All connection attempts failed")."""
    message = str(exc)
    seen = 0
    cause = exc.__cause__
    while cause is not None and seen < 10:  # bounded: cause chains are short
        message = str(cause) or message
        cause, seen = cause.__cause__, seen + 1
    return _one_line(message)


def _server_message(body: object) -> str:
    """The message of an OpenAI-style error body: ``{"error": {"message": ...}}``."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if isinstance(message, str):
            return message
    return ""


def _said(exc: BaseException) -> str:
    """What the provider said, from an OpenAI-style body or the error's own message."""
    message = getattr(exc, "message", None)
    said = _server_message(getattr(exc, "body", None))
    return _one_line(said or (message if isinstance(message, str) else "") or str(exc))


def _model_error(exc: BaseException, failure: ProviderFailure) -> str:
    """What went wrong talking to the model, naming the variable that chose it."""
    if os.environ.get(OPENAI_BASE_URL, "").strip():
        where = f"{os.environ[OPENAI_BASE_URL].strip()} ({OPENAI_BASE_URL})"
    elif os.environ.get(OPENAI_API_KEY, "").strip():
        where = f"the OpenAI API ({OPENAI_API_KEY} is set, {OPENAI_BASE_URL} is not)"
    else:
        where = "the builtin model"
    # the retry's note: "agentwatch: gave up after 4 attempts in 2.1 s"
    notes = [n.removeprefix("agentwatch: ") for n in getattr(exc, "__notes__", ()) or ()]
    tried = "".join(f"; {note}" for note in notes if note.startswith("gave up"))
    if failure.status is not None:
        hint = {401: f"; check {OPENAI_API_KEY}", 403: f"; check {OPENAI_API_KEY}"}
        hint[404] = "; check AGENTWATCH_MODEL and the URL"
        said = _said(exc).rstrip(".")
        return (
            f"the model at {where} answered HTTP {failure.status}: "
            f"{said}{hint.get(failure.status, '')}"
        )
    if failure.kind is FailureKind.TIMEOUT:
        return f"the model at {where} did not answer in time{tried}"
    if failure.kind is FailureKind.CONNECTION:
        return f"cannot reach the model at {where}: {_root_cause(exc)}{tried}"
    return f"the model at {where} failed: {_one_line(str(exc))}"


def _explain(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line for an exception that ended a command."""
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _explain(exc.exceptions[0])
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    failure = classify(exc)
    # Python's own TimeoutError / ConnectionError say nothing of who failed (a closed
    # stdout is a BrokenPipeError): only a provider client's error blames the model.
    if failure is not None and failure.source != PYTHON:
        return EXIT_MODEL_FAILED, _model_error(exc, failure)
    if isinstance(exc, RunTimeoutError):
        return EXIT_MODEL_FAILED, f"{exc} (the limit is {AGENTWATCH_RUN_TIMEOUT})"
    if isinstance(exc, AgentRunError):  # the step limit (StepLimitError) and the like
        return EXIT_MODEL_FAILED, str(exc)
    if isinstance(exc, AgentwatchError | ValueError):  # settings, input, configuration
        return EXIT_USAGE, str(exc)
    return EXIT_UNEXPECTED, f"unexpected error: {type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # the guard: one line each, a traceback only when asked
        code, message = _explain(exc)
        debug = os.environ.get(AGENTWATCH_DEBUG, "").strip() not in ("", "0")
        if debug:
            traceback.print_exc()
        elif code == EXIT_UNEXPECTED:
            message += f"; rerun with {AGENTWATCH_DEBUG}=1 for the traceback"
        print(f"agentwatch {args.command}: {_one_line(message)}", file=sys.stderr)
        return code
    return code


if __name__ == "__main__":
    raise SystemExit(main())
