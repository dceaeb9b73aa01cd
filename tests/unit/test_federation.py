"""Merging the series of N worker processes into one scrape (``serve --workers``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from agentwatch.runtime.service.federation import Families, merge
from agentwatch.telemetry.names import M_EVENT_LOOP_LAG_MAX, M_RATE_LIMIT


def worker(runs: int, in_flight: int, lag: float, trace: str) -> CollectorRegistry:
    """One worker's registry: ``runs`` runs of 0.2 s (the last with ``trace``)."""
    registry = CollectorRegistry()
    counter = Counter("runs", "Runs.", ["agent"], registry=registry)
    histogram = Histogram("run_seconds", "Run time.", buckets=(0.1, 1.0), registry=registry)
    Gauge("in_flight", "Runs in flight.", registry=registry).set(in_flight)
    Gauge(
        M_EVENT_LOOP_LAG_MAX.removesuffix("_seconds"), "Lag.", unit="seconds", registry=registry
    ).set(lag)
    limit = Gauge(M_RATE_LIMIT, "Limit.", ["gen_ai_request_model", "kind"], registry=registry)
    limit.labels("gpt-4o", "requests").set(600)  # one bucket, shared on Redis: not summed
    for _ in range(runs):
        counter.labels("shop").inc()
        histogram.observe(0.2, exemplar={"trace_id": trace})
    return registry


def over_the_wire(registry: CollectorRegistry) -> list:  # type: ignore[type-arg]
    return list(text_string_to_metric_families(generate_latest(registry).decode()))


def test_counters_histograms_and_gauges_add_up_lags_take_the_highest() -> None:
    a = worker(3, 2, 0.05, "a" * 32)
    b = worker(4, 1, 0.20, "b" * 32)
    merged = Families(merge([a.collect(), over_the_wire(b)]))

    text = generate_latest(merged).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s for f in families.values() for s in f.samples
    }
    assert values[("runs_total", (("agent", "shop"),))].value == 7
    assert values[("run_seconds_count", ())].value == 7
    assert values[("run_seconds_sum", ())].value == 7 * 0.2
    assert values[("run_seconds_bucket", (("le", "0.1"),))].value == 0
    bucket = values[("run_seconds_bucket", (("le", "1.0"),))]
    assert bucket.value == 7
    assert bucket.exemplar is not None
    assert bucket.exemplar.labels["trace_id"] in ("a" * 32, "b" * 32)
    assert values[("in_flight", ())].value == 3
    assert values[(M_EVENT_LOOP_LAG_MAX, ())].value == 0.20
    rate_limit = (M_RATE_LIMIT, (("gen_ai_request_model", "gpt-4o"), ("kind", "requests")))
    assert values[rate_limit].value == 600
    created = [
        sample.value
        for registry in (a, b)
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "runs_created"
    ]
    # (_created series are off process-wide once a MetricCatalog was made: then none)
    merged_created = [v.value for k, v in values.items() if k[0] == "runs_created"]
    assert merged_created == ([min(created)] if created else [])


def test_a_series_one_worker_has_alone_is_kept_as_it_is() -> None:
    a = worker(1, 0, 0.0, "a" * 32)
    lonely = CollectorRegistry()
    Counter("only_here", "Only in one worker.", registry=lonely).inc(5)
    merged = merge([a.collect(), over_the_wire(lonely)])
    only = [s for f in merged for s in f.samples if s.name == "only_here_total"]
    assert [s.value for s in only] == [5]
