"""The figures of one window: rates, latency quantiles, error ratios, tokens, spend, batches.

Everything is computed from what changed between two scrapes, never from lifetime
totals: a rate is an increase over the window's seconds, p50/p95 come from the
increase of each histogram bucket, interpolated within the bucket as PromQL's
``histogram_quantile`` does (``OperationStats.quantile`` of the report, the same code).
A latency is None when nothing was observed in the window.

Metric and label names come from ``agentwatch.telemetry.names``. A figure whose metric
the page lacks (an older agentwatch; spend before issue 17 lands) is None, never 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from agentwatch.telemetry import names as n
from agentwatch.telemetry.report import OperationStats

from .window import Window

_COUNT: Final = "_count"
_SUM: Final = "_sum"
_BUCKET: Final = "_bucket"
_TOTAL: Final = "_total"
_LE: Final = "le"


def _counter(name: str) -> str:
    """A counter's sample name in the text exposition (``..._total``)."""
    return name if name.endswith(_TOTAL) else name + _TOTAL


QUANTILES: Final = (0.5, 0.95)


@dataclass(frozen=True, slots=True)
class Row:
    """One operation, tool or model in the window."""

    name: str
    calls: float
    per_second: float
    errors: float
    error_ratio: float | None
    p50_seconds: float | None
    p95_seconds: float | None
    error_types: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One model: its calls as a ``Row``, its tokens, its spend (None: no cost metric, or
    none of its calls in the window priced)."""

    calls: Row
    input_tokens_per_second: float
    output_tokens_per_second: float
    first_chunk_p95_seconds: float | None
    usd_per_second: float | None


@dataclass(frozen=True, slots=True)
class Runs:
    """Agent runs (``invoke_agent``) that ended in the window."""

    count: float
    per_second: float
    errors: float
    error_ratio: float | None
    error_ratio_by_type: dict[str, float]
    cancelled: float
    shed: float  # ended waiting for a run slot, never started
    p50_seconds: float | None
    p95_seconds: float | None
    in_flight: float | None  # admission's gauges and wait (None: the page has none)
    waiting: float | None
    slots: float | None  # the admission limit now (0: none)
    slot_wait_p95_seconds: float | None


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: float
    output_tokens: float
    tokens_per_second: float
    usd: float | None  # None: the target exposes no cost metric
    usd_per_second: float | None
    unpriced_calls: float | None  # model calls with no price (no cost recorded)
    run_cost_p50_usd: float | None  # the cost of a run, from the run cost histogram
    run_cost_p95_usd: float | None


@dataclass(frozen=True, slots=True)
class Batches:
    queue_depth: float | None
    in_progress: float | None
    finished: dict[str, float]  # in the window, by status
    finished_per_second: float
    totals: dict[str, float]  # since the target started, by status
    completed_total: float
    failed_total: float  # failed or timed out, since the target started
    progress: float | None  # finished / (finished + queued + in progress), since start
    eta_seconds: float | None  # queued + in progress at the window's finishing rate
    task_p95_seconds: float | None
    queue_wait_p95_seconds: float | None


@dataclass(frozen=True, slots=True)
class Health:
    retries: float
    giveups: float
    retry_failed: float  # errors not worth a retry
    spans_dropped: float
    spans_dropped_by_reason: dict[str, float]
    loop_lag_p95_seconds: float | None
    loop_lag_max_seconds: float | None


@dataclass(frozen=True, slots=True)
class Figures:
    seconds: float
    restarted: bool
    runs: Runs
    usage: Usage
    batches: Batches
    health: Health
    operations: list[Row]
    tools: list[Row]
    models: list[ModelRow]
    batch_statuses: list[Row]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _finite(asdict(self))
        return out


def _finite(value: Any) -> Any:
    """JSON has no NaN: a figure that cannot be computed is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _quantile(stats: OperationStats, q: float) -> float | None:
    value = stats.quantile(q)
    return None if math.isnan(value) else value


def _error_of(labels: dict[str, str]) -> str | None:
    """The error a series counts (None: it succeeded or was cancelled)."""
    error_type = labels.get(n.L_ERROR_TYPE, "")
    if error_type and error_type != n.CANCELLED:
        return error_type
    status = labels.get(n.L_STATUS, "")
    return status if status in n.BATCH_FAILED_STATUSES else None


@dataclass(slots=True)
class _Group:
    stats: OperationStats
    error_types: dict[str, float] = field(default_factory=dict)
    cancelled: float = 0.0

    def row(self, seconds: float) -> Row:
        calls, errors = self.stats.calls, self.stats.errors
        return Row(
            name=self.stats.name,
            calls=calls,
            per_second=calls / seconds,
            errors=errors,
            error_ratio=errors / calls if calls else None,
            p50_seconds=_quantile(self.stats, 0.5),
            p95_seconds=_quantile(self.stats, 0.95),
            error_types={k: v for k, v in sorted(self.error_types.items()) if v},
        )


def _groups(
    window: Window, family: str, name_of: Callable[[dict[str, str]], str]
) -> dict[str, _Group]:
    """A histogram family's series in the window, grouped by ``name_of(labels)``."""
    groups: dict[str, _Group] = {}
    for suffix in (_COUNT, _BUCKET):
        for labels, value in window.series(family + suffix):
            name = name_of(labels)
            group = groups.setdefault(name, _Group(OperationStats(name)))
            if suffix == _BUCKET:
                le = float(labels[_LE])
                group.stats.buckets[le] = group.stats.buckets.get(le, 0.0) + value
                continue
            group.stats.calls += value
            error = _error_of(labels)
            if error is not None:
                group.stats.errors += value
                group.error_types[error] = group.error_types.get(error, 0.0) + value
            elif labels.get(n.L_ERROR_TYPE) == n.CANCELLED:
                group.cancelled += value
    return groups


def _rows(window: Window, family: str, name_of: Callable[[dict[str, str]], str]) -> list[Row]:
    groups = _groups(window, family, name_of)
    return [g.row(window.seconds) for _, g in sorted(groups.items()) if g.stats.calls]


def _label(*keys: str, prefix: str = "") -> Callable[[dict[str, str]], str]:
    def name_of(labels: dict[str, str]) -> str:
        return " ".join(x for x in (prefix, *(labels.get(k, "") for k in keys)) if x)

    return name_of


def _whole(labels: dict[str, str]) -> str:
    return ""


def _one(window: Window, family: str) -> _Group:
    return _groups(window, family, _whole).get("", _Group(OperationStats("")))


# The operations view: each duration family of the catalog, and what names its rows.
OPERATION_FAMILIES: Final = (
    (n.M_GEN_AI_INVOKE_AGENT_DURATION, _label(n.L_GEN_AI_AGENT_NAME, prefix=n.OP_INVOKE_AGENT)),
    (n.M_GEN_AI_OPERATION_DURATION, _label(n.L_GEN_AI_OPERATION_NAME, n.L_GEN_AI_REQUEST_MODEL)),
    (n.M_GEN_AI_EXECUTE_TOOL_DURATION, _label(n.L_GEN_AI_TOOL_NAME, prefix=n.OP_EXECUTE_TOOL)),
    (n.M_BATCH_TASK_DURATION, _label(prefix=n.SPAN_BATCH_TASK)),
    (n.M_OPERATION_DURATION, _label(n.L_OPERATION)),
)


def _runs(window: Window) -> Runs:
    group = _one(window, n.M_GEN_AI_INVOKE_AGENT_DURATION)
    row = group.row(window.seconds)
    calls = row.calls
    return Runs(
        count=calls,
        per_second=row.per_second,
        errors=row.errors,
        error_ratio=row.error_ratio,
        error_ratio_by_type={k: v / calls for k, v in row.error_types.items()} if calls else {},
        cancelled=group.cancelled,
        shed=window.increase(_counter(n.M_ADMISSION_SHED)),
        p50_seconds=row.p50_seconds,
        p95_seconds=row.p95_seconds,
        in_flight=window.gauge(n.M_ADMISSION_IN_FLIGHT),
        waiting=window.gauge(n.M_ADMISSION_WAITING),
        slots=window.gauge(n.M_ADMISSION_LIMIT),
        slot_wait_p95_seconds=_quantile(_one(window, n.M_ADMISSION_WAIT).stats, 0.95),
    )


def _tokens(window: Window, token_type: str, **labels: str) -> float:
    return window.increase(
        n.M_GEN_AI_TOKEN_USAGE + _SUM, **{n.L_GEN_AI_TOKEN_TYPE: token_type}, **labels
    )


def _spend(window: Window, **labels: str) -> float | None:
    if not window.has(_counter(n.M_COST)):  # an agentwatch before issue 17, or no call yet
        return None
    return window.increase(_counter(n.M_COST), **labels)


def _usage(window: Window) -> Usage:
    tokens_in = _tokens(window, n.TOKEN_INPUT)
    tokens_out = _tokens(window, n.TOKEN_OUTPUT)
    usd = _spend(window)
    unpriced = _counter(n.M_UNPRICED_CALLS)
    run_cost = _one(window, n.M_RUN_COST).stats
    return Usage(
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        tokens_per_second=(tokens_in + tokens_out) / window.seconds,
        usd=usd,
        usd_per_second=None if usd is None else usd / window.seconds,
        unpriced_calls=window.increase(unpriced) if window.has(unpriced) else None,
        run_cost_p50_usd=_quantile(run_cost, 0.5),
        run_cost_p95_usd=_quantile(run_cost, 0.95),
    )


def _models(window: Window) -> list[ModelRow]:
    model = _label(n.L_GEN_AI_REQUEST_MODEL)
    first_chunk = _groups(window, n.M_GEN_AI_TIME_TO_FIRST_CHUNK, model)
    rows = []
    for row in _rows(window, n.M_GEN_AI_OPERATION_DURATION, model):
        by_model = {n.L_GEN_AI_REQUEST_MODEL: row.name}
        usd = _spend(window, **by_model)
        if not usd and window.increase(_counter(n.M_UNPRICED_CALLS), **by_model):
            usd = None  # its calls have no price: not known, not $0
        ttft = first_chunk.get(row.name)
        rows.append(
            ModelRow(
                calls=row,
                input_tokens_per_second=_tokens(window, n.TOKEN_INPUT, **by_model) / window.seconds,
                output_tokens_per_second=_tokens(window, n.TOKEN_OUTPUT, **by_model)
                / window.seconds,
                first_chunk_p95_seconds=None if ttft is None else _quantile(ttft.stats, 0.95),
                usd_per_second=None if usd is None else usd / window.seconds,
            )
        )
    return rows


def _batches(window: Window) -> Batches:
    tasks = _counter(n.M_BATCH_TASKS)
    finished = {s: window.increase(tasks, **{n.L_STATUS: s}) for s in n.BATCH_STATUSES}
    totals = {s: window.total(tasks, **{n.L_STATUS: s}) for s in n.BATCH_STATUSES}
    depth = window.gauge(n.M_BATCH_QUEUE_DEPTH)
    working = window.gauge(n.M_BATCH_IN_PROGRESS)
    left = (depth or 0.0) + (working or 0.0)
    done = sum(totals.values())
    rate = sum(finished.values()) / window.seconds
    return Batches(
        queue_depth=depth,
        in_progress=working,
        finished=finished,
        finished_per_second=rate,
        totals=totals,
        completed_total=totals[n.STATUS_COMPLETED],
        failed_total=sum(totals[s] for s in n.BATCH_FAILED_STATUSES),
        progress=done / (done + left) if done + left else None,
        eta_seconds=(left / rate if rate else None) if left else 0.0,
        task_p95_seconds=_quantile(_one(window, n.M_BATCH_TASK_DURATION).stats, 0.95),
        queue_wait_p95_seconds=_quantile(_one(window, n.M_BATCH_QUEUE_WAIT).stats, 0.95),
    )


def _health(window: Window) -> Health:
    attempts = _counter(n.M_RETRY_ATTEMPTS)
    dropped = _counter(n.M_SPANS_DROPPED)
    by_reason: dict[str, float] = {}
    for labels, value in window.series(dropped):
        reason = labels.get(n.L_REASON, "")
        by_reason[reason] = by_reason.get(reason, 0.0) + value
    return Health(
        retries=window.increase(attempts, **{n.L_OUTCOME: n.RETRY_RETRY}),
        giveups=window.increase(attempts, **{n.L_OUTCOME: n.RETRY_GIVEUP}),
        retry_failed=window.increase(attempts, **{n.L_OUTCOME: n.RETRY_FAILED}),
        spans_dropped=sum(by_reason.values()),
        spans_dropped_by_reason=dict(sorted(by_reason.items())),
        loop_lag_p95_seconds=_quantile(_one(window, n.M_EVENT_LOOP_LAG).stats, 0.95),
        loop_lag_max_seconds=window.gauge(n.M_EVENT_LOOP_LAG_MAX),
    )


def compute(window: Window) -> Figures:
    """Every figure of the window."""
    operations: list[Row] = []
    for family, name_of in OPERATION_FAMILIES:
        operations.extend(_rows(window, family, name_of))
    return Figures(
        seconds=window.seconds,
        restarted=window.restarted,
        runs=_runs(window),
        usage=_usage(window),
        batches=_batches(window),
        health=_health(window),
        operations=operations,
        tools=_rows(window, n.M_GEN_AI_EXECUTE_TOOL_DURATION, _label(n.L_GEN_AI_TOOL_NAME)),
        models=_models(window),
        batch_statuses=_rows(window, n.M_BATCH_TASK_DURATION, _label(n.L_STATUS)),
    )
