"""The performance report: calls, errors, avg, p95, min, max and cost per operation.

Cost: a ``chat {model}`` row's is what its calls cost (``agentwatch_cost_usd_total``,
"unpriced" when no price was known: ``agentwatch_unpriced_calls_total``), an
``invoke_agent {agent}`` row's what its runs cost (``agentwatch_run_cost_usd``); the total
under the table sums the calls, so nothing is counted twice.

Built from the duration histograms of the catalog, read either from a live registry or
from the text of a scraped ``/metrics``. Histograms keep buckets, not raw samples, so
p95 is interpolated within its bucket (as PromQL's ``histogram_quantile`` does) and
min/max are the bounds of the lowest and highest occupied buckets, shown as ``<=``.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from . import names as n

# (family, row title prefix, labels that name the row); failures are told by _is_failure.
_SOURCES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (n.M_GEN_AI_INVOKE_AGENT_DURATION, n.OP_INVOKE_AGENT, (n.L_GEN_AI_AGENT_NAME,)),
    (n.M_GEN_AI_OPERATION_DURATION, "", (n.L_GEN_AI_OPERATION_NAME, n.L_GEN_AI_REQUEST_MODEL)),
    (n.M_GEN_AI_EXECUTE_TOOL_DURATION, n.OP_EXECUTE_TOOL, (n.L_GEN_AI_TOOL_NAME,)),
    (n.M_BATCH_TASK_DURATION, n.SPAN_BATCH_TASK, ()),
    (n.M_OPERATION_DURATION, "", (n.L_OPERATION,)),
)
_FAILED_STATUSES = frozenset(n.BATCH_FAILED_STATUSES)


@dataclass
class OperationStats:
    name: str
    calls: float = 0.0
    errors: float = 0.0
    total: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    cost_usd: float | None = None  # what the row's calls (or runs) cost; None: none priced
    unpriced_calls: float = 0.0  # its billed calls no price was known for
    family: str = ""  # the duration histogram the row comes from

    @property
    def avg(self) -> float:
        return self.total / self.calls if self.calls else math.nan

    def quantile(self, q: float) -> float:
        """Interpolated like PromQL's histogram_quantile."""
        if not self.calls:
            return math.nan
        rank = q * self.calls
        prev_le, prev_count = 0.0, 0.0
        for le, count in sorted(self.buckets.items()):
            if count >= rank:
                if math.isinf(le):
                    return prev_le
                if count == prev_count:
                    return le
                return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
            prev_le, prev_count = le, count
        return prev_le

    @property
    def min_bound(self) -> float:
        for le, count in sorted(self.buckets.items()):
            if count > 0:
                return le
        return math.nan

    @property
    def max_bound(self) -> float:
        prev = 0.0
        highest = math.nan
        for le, count in sorted(self.buckets.items()):
            if count > prev:
                highest = le
            prev = count
        return highest


def collect_stats(families: Iterable[Metric]) -> list[OperationStats]:
    """One row per operation from the catalog's duration histograms."""
    by_family = {family.name: family for family in families}
    rows: dict[str, OperationStats] = {}
    for family_name, prefix, key_labels in _SOURCES:
        family = by_family.get(family_name)
        if family is None:
            continue
        for sample in family.samples:
            labels = sample.labels
            title = " ".join(x for x in (prefix, *(labels.get(k, "") for k in key_labels)) if x)
            row = rows.setdefault(title, OperationStats(title or family_name, family=family_name))
            failed = _is_failure(labels)
            if sample.name.endswith("_count"):
                row.calls += sample.value
                if failed:
                    row.errors += sample.value
            elif sample.name.endswith("_sum"):
                row.total += sample.value
            elif sample.name.endswith("_bucket"):
                le = float(labels["le"])
                row.buckets[le] = row.buckets.get(le, 0.0) + sample.value
    _add_costs(by_family, rows)
    return [row for row in rows.values() if row.calls]


# (family, its samples' name, the row a sample adds to, and to which of the row's fields)
_COSTS: tuple[tuple[str, str, tuple[str, str], str], ...] = (
    (n.M_COST, n.M_COST + "_total", (n.OP_CHAT, n.L_GEN_AI_REQUEST_MODEL), "cost_usd"),
    (
        n.M_UNPRICED_CALLS,
        n.M_UNPRICED_CALLS + "_total",
        (n.OP_CHAT, n.L_GEN_AI_REQUEST_MODEL),
        "unpriced_calls",
    ),
    (n.M_RUN_COST, n.M_RUN_COST + "_sum", (n.OP_INVOKE_AGENT, n.L_GEN_AI_AGENT_NAME), "cost_usd"),
)


def _add_costs(by_family: dict[str, Metric], rows: dict[str, OperationStats]) -> None:
    for family_name, sample_name, (prefix, label), attribute in _COSTS:
        family = by_family.get(family_name)
        for sample in family.samples if family is not None else ():
            row = rows.get(f"{prefix} {sample.labels.get(label, '')}".strip())
            if sample.name != sample_name or row is None:
                continue
            setattr(row, attribute, (getattr(row, attribute) or 0.0) + sample.value)


def _is_failure(labels: dict[str, str]) -> bool:
    error_type = labels.get(n.L_ERROR_TYPE, "")
    if error_type and error_type != n.CANCELLED:
        return True
    return labels.get(n.L_STATUS, "") in _FAILED_STATUSES


def stats_from_registry(registry: CollectorRegistry) -> list[OperationStats]:
    return collect_stats(registry.collect())


def stats_from_text(text: str) -> list[OperationStats]:
    return collect_stats(text_string_to_metric_families(text))


MAX_METRICS_BYTES = 64 * 1024 * 1024  # a /metrics page is kilobytes; this is plenty
_READ_CHUNK = 1 << 16


def fetch_metrics_text(url: str, timeout: float = 10.0, max_bytes: int = MAX_METRICS_BYTES) -> str:
    """The text of a ``/metrics`` page. Never holds more than ``max_bytes`` (64 MiB) nor
    takes much more than ``timeout`` seconds in all: a page that never ends, or that
    trickles, is a ``ValueError`` with one line saying which."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    request = urllib.request.Request(url, headers={"Accept": "text/plain"})
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    with urllib.request.urlopen(request, timeout=timeout) as response:
        while chunk := response.read1(_READ_CHUNK):  # bounded by max_bytes and the deadline
            size += len(chunk)
            if size > max_bytes:
                limit = (
                    f"{max_bytes >> 20} MiB" if max_bytes % (1 << 20) == 0 else f"{max_bytes} bytes"
                )
                raise ValueError(f"the page is larger than {limit}; a metrics page is far smaller")
            if time.monotonic() > deadline:
                raise ValueError(f"the page did not arrive within {timeout:g} s")
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8")


def _seconds(value: float, bound: bool = False) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "> max bucket"
    text = f"{value * 1000:.1f}ms" if value < 1 else f"{value:.3f}s"
    return f"<={text}" if bound else text


def _usd(cost: float | None, unpriced: float = 0.0) -> str:
    text = "-" if cost is None else f"${cost:.6f}"
    if unpriced:
        text = "unpriced" if cost is None else f"{text} +{unpriced:.0f} unpriced"
    return text


def format_report(rows: list[OperationStats], title: str = "Performance report") -> str:
    header = ("operation", "calls", "errors", "avg", "p95", "min", "max", "cost")
    table = [header]
    for row in sorted(rows, key=lambda r: r.name):
        table.append(
            (
                row.name,
                f"{row.calls:.0f}",
                f"{row.errors:.0f}",
                _seconds(row.avg),
                _seconds(row.quantile(0.95)),
                _seconds(row.min_bound, bound=True),
                _seconds(row.max_bound, bound=True),
                _usd(row.cost_usd, row.unpriced_calls),
            )
        )
    if len(table) == 1:
        return f"{title}\n(no operations recorded yet)\n"
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [title, "=" * len(title)]
    for index, r in enumerate(table):
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    calls = [r for r in rows if r.family == n.M_GEN_AI_OPERATION_DURATION]
    priced = [r.cost_usd for r in calls if r.cost_usd is not None]
    unpriced = sum(r.unpriced_calls for r in calls)
    if priced or unpriced:
        total = _usd(sum(priced) if priced else None)
        lines.append(
            f"total cost: {total}" + (f" ({unpriced:.0f} calls unpriced)" if unpriced else "")
        )
    return "\n".join(lines) + "\n"
