"""The metric catalog: every Prometheus metric agentwatch exports, defined once.

Nothing is created at import time: ``MetricCatalog(registry)`` registers the families
in the registry it is given (a fresh ``CollectorRegistry`` per test, the default
registry in a service). Names, help texts, labels and buckets are part of the contract
in docs/architecture.md.

No ``_created`` series, however the telemetry is built (``setup_telemetry``,
``build_telemetry`` or ``Telemetry(...)``: each creates its catalog here). One
``_created`` series per counter and histogram child doubles what Prometheus stores for
nothing the dashboards use. prometheus_client has one switch for it, process-wide and
read at exposition (``disable_created_metrics``); creating a catalog turns it off, so
other metrics of the process lose their ``_created`` series too (as they did when only
``setup_telemetry`` did this).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from . import names as n

SPAN_DROP_REASONS = ("queue_full", "export_failed", "shutdown")

_GENAI_CALL_LABELS = (
    n.L_GEN_AI_OPERATION_NAME,
    n.L_GEN_AI_PROVIDER_NAME,
    n.L_GEN_AI_REQUEST_MODEL,
    n.L_ERROR_TYPE,
)


@dataclass(frozen=True, slots=True)
class MetricCatalog:
    """All metric families, registered in one registry."""

    registry: CollectorRegistry
    gen_ai_operation_duration: Histogram
    gen_ai_token_usage: Histogram
    gen_ai_time_to_first_chunk: Histogram
    gen_ai_time_per_output_chunk: Histogram
    gen_ai_invoke_agent_duration: Histogram
    gen_ai_execute_tool_duration: Histogram
    batch_tasks: Counter
    batch_task_duration: Histogram
    batch_queue_wait: Histogram
    batch_queue_depth: Gauge
    batch_in_progress: Gauge
    retry_attempts: Counter
    retry_backoff: Histogram
    operation_duration: Histogram
    http_server_duration: Histogram
    spans_dropped: Counter
    event_loop_lag: Histogram
    event_loop_lag_max: Gauge
    admission_shed: Counter
    admission_limit: Gauge
    admission_in_flight: Gauge
    admission_waiting: Gauge
    admission_wait: Histogram
    cost: Counter
    unpriced_calls: Counter
    run_cost: Histogram
    rate_limit_wait: Histogram
    rate_limit: Gauge
    redis_queue_tasks: Gauge
    redis_queue_reclaims: Counter
    redis_queue_dead_letters: Counter
    redis_retries: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> MetricCatalog:
        reg = REGISTRY if registry is None else registry
        disable_created_metrics()  # type: ignore[no-untyped-call]  # see the module docstring

        def histogram(
            name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]
        ) -> Histogram:
            return Histogram(name, doc, labels, registry=reg, buckets=buckets)

        catalog = cls(
            registry=reg,
            gen_ai_operation_duration=histogram(
                n.M_GEN_AI_OPERATION_DURATION,
                "GenAI operation duration (gen_ai.client.operation.duration).",
                _GENAI_CALL_LABELS,
                n.DURATION_BUCKETS,
            ),
            gen_ai_token_usage=histogram(
                n.M_GEN_AI_TOKEN_USAGE,
                "Number of input and output tokens used per call (gen_ai.client.token.usage).",
                (
                    n.L_GEN_AI_TOKEN_TYPE,
                    n.L_GEN_AI_OPERATION_NAME,
                    n.L_GEN_AI_PROVIDER_NAME,
                    n.L_GEN_AI_REQUEST_MODEL,
                ),
                n.TOKEN_BUCKETS,
            ),
            gen_ai_time_to_first_chunk=histogram(
                n.M_GEN_AI_TIME_TO_FIRST_CHUNK,
                "Time from the request to the first streamed chunk "
                "(gen_ai.client.operation.time_to_first_chunk).",
                _GENAI_CALL_LABELS,
                n.DURATION_BUCKETS,
            ),
            gen_ai_time_per_output_chunk=histogram(
                n.M_GEN_AI_TIME_PER_OUTPUT_CHUNK,
                "Time between consecutive streamed chunks after the first "
                "(gen_ai.client.operation.time_per_output_chunk).",
                _GENAI_CALL_LABELS,
                n.DURATION_BUCKETS,
            ),
            gen_ai_invoke_agent_duration=histogram(
                n.M_GEN_AI_INVOKE_AGENT_DURATION,
                "Duration of one agent run (invoke_agent).",
                (n.L_GEN_AI_AGENT_NAME, n.L_GEN_AI_REQUEST_MODEL, n.L_ERROR_TYPE),
                n.AGENT_DURATION_BUCKETS,
            ),
            gen_ai_execute_tool_duration=histogram(
                n.M_GEN_AI_EXECUTE_TOOL_DURATION,
                "Duration of one tool call (execute_tool).",
                (n.L_GEN_AI_TOOL_NAME, n.L_GEN_AI_AGENT_NAME, n.L_ERROR_TYPE),
                n.DURATION_BUCKETS,
            ),
            batch_tasks=Counter(
                n.M_BATCH_TASKS, "Finished batch tasks by status.", (n.L_STATUS,), registry=reg
            ),
            batch_task_duration=histogram(
                n.M_BATCH_TASK_DURATION,
                "Work time of one batch task, start to finish.",
                (n.L_STATUS,),
                n.OPERATION_BUCKETS,
            ),
            batch_queue_wait=histogram(
                n.M_BATCH_QUEUE_WAIT,
                "Time a batch task waited in the queue before a worker took it.",
                (n.L_PRIORITY,),
                n.OPERATION_BUCKETS,
            ),
            batch_queue_depth=Gauge(
                n.M_BATCH_QUEUE_DEPTH, "Batch tasks waiting in the queue.", registry=reg
            ),
            batch_in_progress=Gauge(
                n.M_BATCH_IN_PROGRESS, "Batch tasks being worked on.", registry=reg
            ),
            retry_attempts=Counter(
                n.M_RETRY_ATTEMPTS,
                "Attempts of retried calls by outcome (success, retry, giveup).",
                (n.L_OPERATION, n.L_OUTCOME),
                registry=reg,
            ),
            retry_backoff=histogram(
                n.M_RETRY_BACKOFF,
                "Each wait before a retry.",
                (n.L_OPERATION,),
                n.OPERATION_BUCKETS,
            ),
            operation_duration=histogram(
                n.M_OPERATION_DURATION,
                "Duration of any operation under observe(); error_type is empty when it succeeded.",
                (n.L_OPERATION, n.L_ERROR_TYPE),
                n.OPERATION_BUCKETS,
            ),
            http_server_duration=histogram(
                n.M_HTTP_SERVER_DURATION,
                "Duration of HTTP requests served by the agentwatch API.",
                (n.L_HTTP_METHOD, n.L_HTTP_ROUTE, n.L_HTTP_STATUS),
                n.HTTP_DURATION_BUCKETS,
            ),
            spans_dropped=Counter(
                n.M_SPANS_DROPPED,
                "Spans lost because the trace backend was slow or down.",
                (n.L_REASON,),
                registry=reg,
            ),
            event_loop_lag=histogram(
                n.M_EVENT_LOOP_LAG,
                "How late the event loop ran a timer: time every run and request waits.",
                (),
                n.LAG_BUCKETS,
            ),
            event_loop_lag_max=Gauge(
                n.M_EVENT_LOOP_LAG_MAX,
                "The longest the event loop was late in the last minute, a stall still going "
                "on included: a freeze shows here even when the lag histogram's p99 does not.",
                registry=reg,
            ),
            admission_shed=Counter(
                n.M_ADMISSION_SHED,
                "Runs that ended before they got a run slot (no invoke_agent span): "
                "their deadline passed (timeout), their caller went away (cancelled) "
                "or the wait queue was full (too_many_waiting).",
                (n.L_REASON,),
                registry=reg,
            ),
            admission_limit=Gauge(
                n.M_ADMISSION_LIMIT,
                "Runs admitted at once at most (adaptive: moved by the event loop's lag); "
                "0: no limit.",
                registry=reg,
            ),
            admission_in_flight=Gauge(
                n.M_ADMISSION_IN_FLIGHT, "Runs holding a run slot.", registry=reg
            ),
            admission_waiting=Gauge(
                n.M_ADMISSION_WAITING, "Runs waiting for a run slot.", registry=reg
            ),
            admission_wait=histogram(
                n.M_ADMISSION_WAIT,
                "Time a run waited for its run slot (0 when it got one at once).",
                (),
                n.OPERATION_BUCKETS,
            ),
            cost=Counter(
                n.M_COST,
                "Money spent on model calls, USD, from the offline price table (each billed "
                "call, failed ones included).",
                (n.L_GEN_AI_PROVIDER_NAME, n.L_GEN_AI_REQUEST_MODEL, n.L_GEN_AI_AGENT_NAME),
                registry=reg,
            ),
            unpriced_calls=Counter(
                n.M_UNPRICED_CALLS,
                "Billed model calls with no known price (no cost recorded for them).",
                (n.L_GEN_AI_PROVIDER_NAME, n.L_GEN_AI_REQUEST_MODEL),
                registry=reg,
            ),
            run_cost=histogram(
                n.M_RUN_COST,
                "Cost of one agent run, USD (runs whose calls were all unpriced: none).",
                (n.L_GEN_AI_AGENT_NAME, n.L_GEN_AI_REQUEST_MODEL),
                n.COST_BUCKETS,
            ),
            rate_limit_wait=histogram(
                n.M_RATE_LIMIT_WAIT,
                "Time a model call waited for its model's client-side rate limit "
                "(AGENTWATCH_RATE_LIMIT_RPM / _TPM, and what the provider's headers said).",
                (n.L_GEN_AI_REQUEST_MODEL,),
                n.OPERATION_BUCKETS,
            ),
            rate_limit=Gauge(
                n.M_RATE_LIMIT,
                "The rate a model's client-side limit runs at, per minute: the configured "
                "AGENTWATCH_RATE_LIMIT_RPM / _TPM, or lower when the provider's "
                "x-ratelimit-limit-* headers said less.",
                (n.L_GEN_AI_REQUEST_MODEL, n.L_KIND),
                registry=reg,
            ),
            redis_queue_tasks=Gauge(
                n.M_REDIS_QUEUE_TASKS,
                "Tasks of the Redis batch queue, read from Redis: waiting (not yet taken) "
                "and pending (taken by a worker, not yet acknowledged).",
                (n.L_STATE,),
                registry=reg,
            ),
            redis_queue_reclaims=Counter(
                n.M_REDIS_QUEUE_RECLAIMS,
                "Redis queue tasks this process took again after their worker went quiet "
                "for the visibility timeout (XAUTOCLAIM).",
                registry=reg,
            ),
            redis_queue_dead_letters=Counter(
                n.M_REDIS_QUEUE_DEAD_LETTERS,
                "Redis queue tasks this process ended as failed (dead letter) because "
                "they had been taken the maximum number of times without finishing.",
                registry=reg,
            ),
            redis_retries=Counter(
                n.M_REDIS_RETRIES,
                "Redis calls of this process that failed (Redis down, restarting, "
                "unreachable) and were retried after a backoff.",
                registry=reg,
            ),
        )
        catalog._declare_known_series()
        return catalog

    def _declare_known_series(self) -> None:
        """Children whose label values are known up front exist from the first scrape
        (at 0), so rate() and alert expressions have series before the first event."""
        for reason in SPAN_DROP_REASONS:
            self.spans_dropped.labels(reason)
        for status in n.BATCH_STATUSES:
            self.batch_tasks.labels(status)
        for reason in n.ADMISSION_SHED_REASONS:
            self.admission_shed.labels(reason)
        for state in n.QUEUE_STATES:
            self.redis_queue_tasks.labels(state)
        for operation in (n.OP_CHAT, n.OP_EXECUTE_TOOL):
            for outcome in n.RETRY_OUTCOMES:
                self.retry_attempts.labels(operation, outcome)
