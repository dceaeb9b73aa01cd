"""``agentwatch report --url URL``: the performance report of a ``/metrics`` page."""

from __future__ import annotations

import argparse
import sys

from agentwatch.telemetry import fetch_metrics_text, format_report, stats_from_text

from .exits import EXIT_OK, EXIT_USAGE


def report_command(args: argparse.Namespace) -> int:
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
    return EXIT_OK
