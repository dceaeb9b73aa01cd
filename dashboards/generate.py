"""Writes dashboards/agentwatch.json, the Grafana dashboard (``make dashboards``).

The dashboard is generated so that every panel is built the same way and its PromQL is
in one readable place; tests/integration/test_dashboards.py checks that the committed
JSON is this script's output, and evaluates every query on a real Prometheus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentwatch.telemetry import names as n

OUT = Path(__file__).with_name("agentwatch.json")
SEL = 'job=~"$job", instance=~"$instance"'
RI = "$__rate_interval"
# errors: a class name; "" is ok, "cancelled" is not
NOT_ERROR = f'{n.L_ERROR_TYPE}!~"|{n.CANCELLED}"'
TOTAL = "_total"  # a counter's exposed name: its family name + _total


def legend(*labels: str) -> str:
    return " ".join(f"{{{{{label}}}}}" for label in labels)


def rate(metric: str, extra: str = "", by: str = "") -> str:
    labels = f"{SEL}, {extra}" if extra else SEL
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping}(rate({metric}{{{labels}}}[{RI}]))"


def quantile(q: float, histogram: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({histogram}_bucket{{{SEL}}}[{RI}])))"


def error_ratio(histogram: str, by: str = "") -> str:
    total = rate(f"{histogram}_count", by=by)
    errors = rate(f"{histogram}_count", NOT_ERROR, by=by)
    # `or 0 * total`: a ratio of 0 (not "no data") while nothing failed
    return f"({errors} or 0 * {total}) / {total}"


def target(expr: str, legend: str, ref: str, exemplar: bool = False) -> dict[str, Any]:
    return {
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
        "exemplar": exemplar,
    }


class Layout:
    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.y = 0
        self.x = 0
        self.next_id = 1

    def row(self, title: str) -> None:
        self._close_line()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "id": self._id(),
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def panel(
        self,
        title: str,
        targets: list[dict[str, Any]],
        unit: str,
        description: str,
        kind: str = "timeseries",
        width: int = 8,
    ) -> None:
        if self.x + width > 24:
            self._close_line()
        self.panels.append(
            {
                "type": kind,
                "title": title,
                "description": description,
                "id": self._id(),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": width, "x": self.x, "y": self.y},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": targets,
            }
        )
        self.x += width

    def _close_line(self) -> None:
        if self.x:
            self.y += 8
            self.x = 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


# A series every agentwatch process exposes from its first scrape (declared at 0).
ALWAYS_THERE = n.M_SPANS_DROPPED + TOTAL


def datasource_variable(name: str, label: str, kind: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "datasource", "query": kind, "current": {}}


def query_variable(name: str, definition: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": definition, "refId": name},
        "definition": definition,
        "includeAll": True,
        "multi": True,
        "refresh": 2,
        "current": {},
    }


def admission_row(d: Layout) -> None:
    """How many runs the process takes at once (adaptive by default), who waits, and how
    long model calls wait for their model's rate limit."""
    d.row("Admission and rate limits")
    d.panel(
        "Run limit, in flight, waiting",
        [
            target(f"sum({metric}{{{SEL}}})", title, ref)
            for metric, title, ref in (
                (n.M_ADMISSION_LIMIT, "limit", "A"),
                (n.M_ADMISSION_IN_FLIGHT, "in flight", "B"),
                (n.M_ADMISSION_WAITING, "waiting", "C"),
            )
        ],
        "short",
        "The limit on runs at once (adaptive unless AGENTWATCH_MAX_CONCURRENT_RUNS pins it; "
        "0: no limit), the runs holding a slot and those waiting for one. An adaptive limit "
        "falls when the event loop runs late and grows while runs wait and the loop keeps up.",
    )
    d.panel(
        "Wait for a run slot p50 / p95 / p99",
        [
            target(quantile(q, n.M_ADMISSION_WAIT), f"p{int(q * 100)}", ref)
            for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
        ],
        "s",
        "Time from a run's arrival to its slot (0 when one was free): part of every "
        "interactive run's latency.",
    )
    shed = rate(n.M_ADMISSION_SHED + TOTAL, f'{n.L_REASON}!="{n.SHED_CANCELLED}"')
    arrived = f"({rate(n.M_ADMISSION_WAIT + '_count')} + {shed})"
    d.panel(
        "Share of runs shed",
        [target(f"{shed} / {arrived}", "shed / arrived", "A")],
        "percentunit",
        "Runs refused (503 overloaded, or 504 when their own deadline passed waiting) out of "
        "all that arrived; callers that went away are not counted. Alert "
        "AgentwatchRunsShed when it stays above 1%.",
    )
    wait = n.M_RATE_LIMIT_WAIT
    model = n.L_GEN_AI_REQUEST_MODEL
    d.panel(
        "Rate limit wait by model: p95 and share of time",
        [
            target(quantile(0.95, wait, by=model), f"p95 {legend(model)}", "A"),
            target(
                f"{rate(wait + '_sum', by=model)} / {rate(wait + '_count', by=model)}",
                f"mean {legend(model)}",
                "B",
            ),
        ],
        "s",
        "How long model calls waited for their model's client-side budget "
        "(AGENTWATCH_RATE_LIMIT_RPM / _TPM, lowered to what the provider's x-ratelimit-* "
        "headers say): a batch slowed down before the provider refuses it. Also the "
        "agentwatch.rate_limit.wait attribute of each chat span.",
    )
    d.panel(
        "Rate limit by model (per minute)",
        [
            target(
                f"max by ({model}, {n.L_KIND}) ({n.M_RATE_LIMIT}{{{SEL}}})",
                legend(model, n.L_KIND),
                "A",
            )
        ],
        "short",
        "The rate each model's client-side budget runs at: the configured "
        "AGENTWATCH_RATE_LIMIT_RPM / _TPM, or lower once the provider's "
        "x-ratelimit-limit-* headers said less (a learned limit is the provider's, "
        "not ours). Per process (max across them; on Redis one budget for all).",
    )


def cost_panels(d: Layout) -> None:
    """Spend from the offline price table (telemetry/prices.py): what calls cost by model
    and agent, what a run costs, and the calls no price was found for."""
    spend = n.M_COST + TOTAL
    d.row("Cost")
    for by, title in ((n.L_GEN_AI_REQUEST_MODEL, "model"), (n.L_GEN_AI_AGENT_NAME, "agent")):
        d.panel(
            f"Spend per hour by {title}",
            [target(f"3600 * {rate(spend, by=by)}", legend(by), "A", True)],
            "currencyUSD",
            f"USD per hour spent on model calls, by {title} ({spend}; failed calls that "
            "were billed included). Alert: AgentwatchSpendRateHigh.",
            width=6,
        )
    d.panel(
        "Cost per run p50 / p95",
        [
            target(quantile(q, n.M_RUN_COST), f"p{int(q * 100)}", ref, True)
            for q, ref in ((0.5, "A"), (0.95, "B"))
        ],
        "currencyUSD",
        "What one agent run cost (runs with no priced call are not in it); exemplar dots "
        "open an expensive run's trace.",
        width=6,
    )
    d.panel(
        "Unpriced calls by model",
        [
            target(
                rate(n.M_UNPRICED_CALLS + TOTAL, by=n.L_GEN_AI_REQUEST_MODEL),
                legend(n.L_GEN_AI_REQUEST_MODEL),
                "A",
            )
        ],
        "reqps",
        "Billed calls of models with no known price: their cost is missing from the spend "
        "panels. Price them in AGENTWATCH_PRICES_FILE.",
        width=6,
    )


def build() -> dict[str, Any]:
    d = Layout()
    agent = n.M_GEN_AI_INVOKE_AGENT_DURATION
    chat = n.M_GEN_AI_OPERATION_DURATION
    tool = n.M_GEN_AI_EXECUTE_TOOL_DURATION

    d.row("Agent runs")
    d.panel(
        "Runs per second",
        [
            target(
                rate(f"{agent}_count", by=n.L_GEN_AI_AGENT_NAME),
                legend(n.L_GEN_AI_AGENT_NAME),
                "A",
            )
        ],
        "reqps",
        "Finished agent runs by agent.",
    )
    d.panel(
        "Error ratio",
        [target(error_ratio(agent), "errors / runs", "A")],
        "percentunit",
        "Share of runs that failed (cancellations excluded).",
    )
    d.panel(
        "Run duration p50 / p95 / p99",
        [
            target(quantile(q, agent), f"p{int(q * 100)}", ref, True)
            for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
        ],
        "s",
        "Agent run latency; exemplar dots open the trace of a run in that bucket.",
    )
    d.panel(
        "Runs shed before a run slot",
        [
            target(
                rate(n.M_ADMISSION_SHED + TOTAL, by=n.L_REASON),
                legend(n.L_REASON),
                "A",
            )
        ],
        "reqps",
        "Runs that ended waiting for a run slot (AGENTWATCH_MAX_CONCURRENT_RUNS), by reason: "
        "their deadline passed (timeout), their caller went away (cancelled), or the wait "
        "queue was full (too_many_waiting). They never started, so they are not in the runs "
        "panels; 0 while there is room.",
    )

    admission_row(d)

    d.row("LLM calls")
    d.panel(
        "Latency p95 by model",
        [
            target(
                quantile(0.95, chat, n.L_GEN_AI_REQUEST_MODEL),
                legend(n.L_GEN_AI_REQUEST_MODEL),
                "A",
                True,
            )
        ],
        "s",
        "gen_ai.client.operation.duration, all attempts of a call included.",
    )
    d.panel(
        "Tokens per second",
        [
            target(
                rate(f"{n.M_GEN_AI_TOKEN_USAGE}_sum", by=n.L_GEN_AI_TOKEN_TYPE),
                legend(n.L_GEN_AI_TOKEN_TYPE),
                "A",
            )
        ],
        "short",
        "Input and output tokens per second.",
    )
    d.panel(
        "LLM errors by type",
        [
            target(
                f"{rate(f'{chat}_count', NOT_ERROR, by=n.L_ERROR_TYPE)} or 0 * "
                f"{rate(f'{chat}_count')}",
                legend(n.L_ERROR_TYPE),
                "A",
            )
        ],
        "reqps",
        "Failed LLM calls per second by error type.",
    )
    d.panel(
        "Time to first token p50 / p95",
        [
            target(
                quantile(q, n.M_GEN_AI_TIME_TO_FIRST_CHUNK),
                f"p{int(q * 100)}",
                ref,
                True,
            )
            for q, ref in ((0.5, "A"), (0.95, "B"))
        ],
        "s",
        "Streaming: from the request to the first chunk.",
    )
    d.panel(
        "Time per output chunk p50",
        [target(quantile(0.5, n.M_GEN_AI_TIME_PER_OUTPUT_CHUNK), "p50", "A")],
        "s",
        "Streaming: each gap between chunks after the first.",
    )

    cost_panels(d)

    d.row("Tools")
    d.panel(
        "Calls by tool",
        [target(rate(f"{tool}_count", by=n.L_GEN_AI_TOOL_NAME), legend(n.L_GEN_AI_TOOL_NAME), "A")],
        "reqps",
        "Tool calls per second.",
    )
    d.panel(
        "Error ratio by tool",
        [target(error_ratio(tool, n.L_GEN_AI_TOOL_NAME), legend(n.L_GEN_AI_TOOL_NAME), "A")],
        "percentunit",
        "Share of tool calls that failed (the run goes on: the model sees the error).",
    )
    d.panel(
        "Duration p95 by tool",
        [
            target(
                quantile(0.95, tool, n.L_GEN_AI_TOOL_NAME), legend(n.L_GEN_AI_TOOL_NAME), "A", True
            )
        ],
        "s",
        "Tool call latency.",
    )

    d.row("Batch")
    d.panel(
        "Queue depth and in progress",
        [
            target(f"sum({n.M_BATCH_QUEUE_DEPTH}{{{SEL}}})", "queued", "A"),
            target(f"sum({n.M_BATCH_IN_PROGRESS}{{{SEL}}})", "in progress", "B"),
        ],
        "short",
        "Tasks waiting and tasks being worked.",
    )
    d.panel(
        "Queue wait p95 by priority",
        [
            target(
                quantile(0.95, n.M_BATCH_QUEUE_WAIT, n.L_PRIORITY),
                f"priority {legend(n.L_PRIORITY)}",
                "A",
                True,
            )
        ],
        "s",
        "Enqueue to start.",
    )
    d.panel(
        "Outcomes",
        [target(rate(n.M_BATCH_TASKS + TOTAL, by=n.L_STATUS), legend(n.L_STATUS), "A")],
        "ops",
        "Finished tasks per second by status.",
    )
    d.panel(
        "Task duration p95 by status",
        [
            target(
                quantile(0.95, n.M_BATCH_TASK_DURATION, n.L_STATUS),
                legend(n.L_STATUS),
                "A",
                True,
            )
        ],
        "s",
        "Work time of a task (its queue wait not included), by how it ended.",
    )
    d.panel(
        "Redis queue (agentwatch worker)",
        [
            # every worker reads the same queue from Redis: max, not sum
            target(
                f"max by ({n.L_STATE}) ({n.M_REDIS_QUEUE_TASKS}{{{SEL}}})", legend(n.L_STATE), "A"
            ),
            target(rate(n.M_REDIS_QUEUE_RECLAIMS + TOTAL), "reclaimed/s", "B"),
            target(rate(n.M_REDIS_QUEUE_DEAD_LETTERS + TOTAL), "dead letters/s", "C"),
            target(rate(n.M_REDIS_RETRIES + TOTAL), "Redis calls retried/s", "D"),
        ],
        "short",
        "Tasks waiting and pending (taken, not acknowledged) as read from Redis; tasks taken "
        "again after their worker went quiet; tasks ended as dead letters; calls retried "
        "while Redis did not answer.",
    )

    d.row("Retries")
    d.panel(
        "Attempts by outcome",
        [
            target(
                rate(n.M_RETRY_ATTEMPTS + TOTAL, by=f"{n.L_OPERATION}, {n.L_OUTCOME}"),
                legend(n.L_OPERATION, n.L_OUTCOME),
                "A",
            )
        ],
        "ops",
        "Every attempt of a call: success, retry (another attempt follows), giveup (a transient "
        "error with no attempt or time left), failed (an error not worth a retry).",
    )
    d.panel(
        "Time spent backing off",
        [target(rate(f"{n.M_RETRY_BACKOFF}_sum", by=n.L_OPERATION), legend(n.L_OPERATION), "A")],
        "s",
        "Seconds of waiting per second, by operation.",
    )

    d.row("HTTP API")
    d.panel(
        "Requests by route and status",
        [
            target(
                rate(
                    f"{n.M_HTTP_SERVER_DURATION}_count",
                    by=f"{n.L_HTTP_ROUTE}, {n.L_HTTP_STATUS}",
                ),
                legend(n.L_HTTP_ROUTE, n.L_HTTP_STATUS),
                "A",
            )
        ],
        "reqps",
        "The service's own API.",
    )
    d.panel(
        "Latency p95 by route",
        [
            target(
                quantile(0.95, n.M_HTTP_SERVER_DURATION, n.L_HTTP_ROUTE),
                legend(n.L_HTTP_ROUTE),
                "A",
            )
        ],
        "s",
        "Request duration by route template.",
    )

    d.row("Telemetry health")
    d.panel(
        "Spans dropped",
        [target(rate(n.M_SPANS_DROPPED + TOTAL, by=n.L_REASON), legend(n.L_REASON), "A")],
        "short",
        "Spans lost because the trace backend was slow or down; requests are unaffected.",
    )
    lag_max = f"max_over_time({n.M_EVENT_LOOP_LAG_MAX}{{{SEL}}}[{RI}])"
    d.panel(
        "Event loop lag",
        [
            target(f"max by (instance) ({lag_max})", "max {{instance}}", "A"),
            target(quantile(0.99, n.M_EVENT_LOOP_LAG), "p99", "B"),
        ],
        "s",
        "How late the service's event loop runs a timer; every run and request waits as "
        "long. max is the worst stall (a freeze shows there; p99 hides it among 50 samples/s).",
    )
    d.panel(
        "Event loop time stalled",
        [target(rate(f"{n.M_EVENT_LOOP_LAG}_sum", by="instance"), "{{instance}}", "A")],
        "percentunit",
        "Share of wall time the event loop ran late: the lag weighted by time.",
    )
    d.panel(
        "Scrape up",
        [target(f"up{{{SEL}}}", "{{instance}}", "A")],
        "short",
        "Whether Prometheus reaches /metrics.",
    )

    return {
        "title": "agentwatch",
        "uid": "agentwatch",
        "description": (
            "Agent runs, LLM calls, tools, batches, retries, the HTTP API and telemetry health."
        ),
        "tags": ["agentwatch", "genai", "langchain"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                datasource_variable("datasource", "Prometheus", "prometheus"),
                datasource_variable("traces", "Traces", "jaeger"),
                query_variable("job", f"label_values({ALWAYS_THERE}, job)"),
                query_variable(
                    "instance", f'label_values({ALWAYS_THERE}{{job=~"$job"}}, instance)'
                ),
            ]
        },
        "panels": d.panels,
    }


def main() -> None:
    OUT.write_text(json.dumps(build(), indent=2) + "\n")


if __name__ == "__main__":
    main()
