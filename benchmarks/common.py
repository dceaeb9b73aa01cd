"""Shared benchmark plumbing: timing trials, machine facts, the RESULTS.md writer."""

from __future__ import annotations

import platform
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

RESULTS = Path(__file__).with_name("RESULTS.md")


class DiscardingExporter(SpanExporter):
    """The end of the trace pipeline in benchmarks: accepts and forgets every batch."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclass(frozen=True)
class Measured:
    """Repeated trials of one variant, per-operation cost in nanoseconds."""

    name: str
    trials: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.trials)

    @property
    def spread(self) -> str:
        return f"{min(self.trials):,.0f}-{max(self.trials):,.0f}"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return f"{cpu}, {cores} cores, {platform.system()} {platform.release()}"


def versions(*packages: str) -> str:
    found = []
    for name in packages:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return f"Python {platform.python_version()}; " + ", ".join(found)
