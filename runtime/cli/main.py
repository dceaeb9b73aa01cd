"""The ``agentwatch`` command line: ``demo | serve | run | batch | worker | report | top | model``.

This module parses the command line (flag values checked by the parser), dispatches to
the command's own function (serve.py: ``serve``, ``model``, ``demo``; run.py; batch.py;
report.py; top/) and guards it: a user's ordinary mistake (a port in use, a bad flag value, a
model that cannot be reached) is one line on stderr naming the problem and the flag or
variable they used, and a documented exit code (``EXIT_CODES``, exits.py); only a bug
prints a traceback, and only with ``AGENTWATCH_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Final, NoReturn

from agentwatch.telemetry import AgentwatchError

from ..agents.agent import AgentRunError, RunTimeoutError
from ..budget import BudgetExceededError
from ..provider_errors import PYTHON, FailureKind, ProviderFailure, classify
from ..settings import AGENTWATCH_RUN_TIMEOUT, OPENAI_API_KEY, OPENAI_BASE_URL
from .batch import BATCH_EPILOG, batch_command
from .exits import EXIT_CANNOT_LISTEN as EXIT_CANNOT_LISTEN
from .exits import EXIT_CODES, CliError
from .exits import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from .exits import EXIT_MODEL_FAILED as EXIT_MODEL_FAILED
from .exits import EXIT_OK as EXIT_OK
from .exits import EXIT_UNEXPECTED as EXIT_UNEXPECTED
from .exits import EXIT_USAGE as EXIT_USAGE
from .queue_worker import METRICS_PORT, WORKER_EPILOG, worker_command
from .report import report_command
from .run import run_command
from .serve import MODEL_PORT, demo_command, model_command, serve_command
from .top.command import TOP_EPILOG, top_command
from .top.screen import VIEWS

AGENTWATCH_DEBUG: Final = "AGENTWATCH_DEBUG"
DEFAULT_METRICS_URL: Final = "http://127.0.0.1:8080/metrics"  # serve's defaults


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
    demo_cmd.set_defaults(func=demo_command)

    serve = commands.add_parser("serve", help="serve /v1/runs and /metrics")
    serve.add_argument("--host", help="bind address (default 127.0.0.1, or AGENTWATCH_HOST)")
    serve.add_argument("--port", type=_port, help="port (default 8080, or AGENTWATCH_PORT)")
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="worker processes serving the port (default 1); /metrics on any counts all",
    )
    serve.set_defaults(func=serve_command)

    run = commands.add_parser("run", help="run one query and print the answer and trace id")
    run.add_argument("query", help="the question for the agent, in quotes")
    run.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    run.set_defaults(func=run_command)

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
    batch.add_argument(
        "--budget-usd",
        type=_positive_float,
        help="start no more tasks once the batch's tasks (those in --out too) cost this "
        "many USD; the rest stay unrun, to resume with a larger budget",
    )
    batch.add_argument(
        "--redis",
        metavar="URL",
        help="enqueue on this Redis (redis://host:6379/0) for `agentwatch worker` processes "
        "to run; results still go to --out (--workers and --concurrency are the workers')",
    )
    batch.set_defaults(func=batch_command)

    worker = commands.add_parser(
        "worker",
        help="run tasks of any batch from a Redis queue (agentwatch batch --redis)",
        epilog=WORKER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument("--redis", metavar="URL", required=True, help="redis://host:6379/0")
    worker.add_argument(
        "--concurrency", type=_positive_int, default=8, help="tasks run at once (default 8)"
    )
    worker.add_argument(
        "--metrics-host", default="127.0.0.1", help="/metrics bind address (default 127.0.0.1)"
    )
    worker.add_argument(
        "--metrics-port",
        type=_port,
        default=METRICS_PORT,
        help="/metrics port (default %(default)s; 0: any free port)",
    )
    worker.set_defaults(func=worker_command)

    report = commands.add_parser("report", help="print the performance report of a /metrics URL")
    report.add_argument(
        "--url",
        default=DEFAULT_METRICS_URL,
        help="the /metrics page to read (default %(default)s)",
    )
    report.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        help="seconds to wait for it (default %(default)s)",
    )
    report.set_defaults(func=report_command)

    top = commands.add_parser(
        "top",
        help="a live view of one or more /metrics pages",
        epilog=TOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument(
        "--url",
        action="append",
        help=f"a /metrics page; repeat for several replicas, shown summed and each "
        f"(default {DEFAULT_METRICS_URL})",
    )
    top.add_argument(
        "--interval",
        type=_positive_float,
        default=2.0,
        help="seconds between scrapes (default %(default)s)",
    )
    top.add_argument(
        "--timeout",
        type=_positive_float,
        help="seconds each scrape may take (default: the interval, at most 5)",
    )
    top.add_argument(
        "--view",
        choices=VIEWS,
        default=VIEWS[0],
        help="the view to start with (default %(default)s)",
    )
    top.add_argument(
        "--once",
        action="store_true",
        help="print one frame as text (two scrapes --interval apart) and exit",
    )
    top.add_argument("--json", action="store_true", help="print that frame's figures as JSON")
    top.set_defaults(func=top_command, default_url=DEFAULT_METRICS_URL)

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
    model.set_defaults(func=model_command)
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
    if isinstance(exc, AgentRunError | BudgetExceededError):  # step limit, budget, ...
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
