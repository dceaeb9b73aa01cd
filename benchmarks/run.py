"""`make bench`: run every benchmark and rewrite benchmarks/RESULTS.md."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_observe
from benchmarks.common import RESULTS, machine, versions


def main() -> int:
    sections = [bench_observe.run()]
    header = [
        "# Benchmark results",
        "",
        "Written by `make bench` (benchmarks/run.py); do not edit by hand.",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}",
        "- versions: "
        + versions("opentelemetry-sdk", "prometheus-client", "aiohttp", "langchain-core"),
        "",
    ]
    text = "\n".join(header + [line for section in sections for line in section])
    RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
