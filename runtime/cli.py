"""The ``agentwatch`` command line: ``demo``, ``report``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from agentwatch.telemetry import (
    AgentwatchError,
    fetch_metrics_text,
    format_report,
    stats_from_text,
)

from . import demo


def _report(args: argparse.Namespace) -> int:
    try:
        text = fetch_metrics_text(args.url, timeout=args.timeout)
    except (OSError, ValueError) as exc:
        print(f"agentwatch report: cannot read {args.url}: {exc}", file=sys.stderr)
        return 2
    print(format_report(stats_from_text(text), title=f"Performance report ({args.url})"), end="")
    return 0


def _demo(args: argparse.Namespace) -> int:
    return asyncio.run(demo.main(demo.setup(), port=args.port))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentwatch", description="An async agent runtime with observability built in."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    report = commands.add_parser("report", help="print the performance report of a /metrics URL")
    report.add_argument("--url", default="http://127.0.0.1:8080/metrics")
    report.add_argument("--timeout", type=float, default=10.0)
    report.set_defaults(func=_report)

    demo_cmd = commands.add_parser("demo", help="run the demo workload and print the report")
    demo_cmd.add_argument("--port", type=int, default=0, help="metrics port (0: any free one)")
    demo_cmd.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except AgentwatchError as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
