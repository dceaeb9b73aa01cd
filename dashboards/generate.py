"""Writes dashboards/agentwatch.json, the Grafana dashboard (``make dashboards``).

The dashboard is generated so that every panel is built the same way and its PromQL is
in one readable place; tests/integration/test_dashboards.py checks that the committed
JSON is this script's output, and evaluates every query on a real Prometheus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("agentwatch.json")
SEL = 'job=~"$job", instance=~"$instance"'
RI = "$__rate_interval"
NOT_ERROR = 'error_type!~"|cancelled"'  # errors: a class name; "" is ok, "cancelled" is not


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
ALWAYS_THERE = "agentwatch_telemetry_spans_dropped_total"


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


def build() -> dict[str, Any]:
    d = Layout()
    agent = "gen_ai_invoke_agent_duration_seconds"
    chat = "gen_ai_client_operation_duration_seconds"
    tool = "gen_ai_execute_tool_duration_seconds"

    d.row("Agent runs")
    d.panel(
        "Runs per second",
        [target(rate(f"{agent}_count", by="gen_ai_agent_name"), "{{gen_ai_agent_name}}", "A")],
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
                rate("agentwatch_admission_shed_total", by="reason"),
                "{{reason}}",
                "A",
            )
        ],
        "reqps",
        "Runs that ended waiting for a run slot (AGENTWATCH_MAX_CONCURRENT_RUNS), by reason: "
        "their deadline passed (timeout) or their caller went away (cancelled). They never "
        "started, so they are not in the runs panels; 0 while there is room.",
    )

    d.row("LLM calls")
    d.panel(
        "Latency p95 by model",
        [
            target(
                quantile(0.95, chat, "gen_ai_request_model"), "{{gen_ai_request_model}}", "A", True
            )
        ],
        "s",
        "gen_ai.client.operation.duration, all attempts of a call included.",
    )
    d.panel(
        "Tokens per second",
        [
            target(
                rate("gen_ai_client_token_usage_sum", by="gen_ai_token_type"),
                "{{gen_ai_token_type}}",
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
                f"{rate(f'{chat}_count', NOT_ERROR, by='error_type')} or 0 * "
                f"{rate(f'{chat}_count')}",
                "{{error_type}}",
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
                quantile(q, "gen_ai_client_operation_time_to_first_chunk_seconds"),
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
        [
            target(
                quantile(0.5, "gen_ai_client_operation_time_per_output_chunk_seconds"), "p50", "A"
            )
        ],
        "s",
        "Streaming: each gap between chunks after the first.",
    )

    d.row("Tools")
    d.panel(
        "Calls by tool",
        [target(rate(f"{tool}_count", by="gen_ai_tool_name"), "{{gen_ai_tool_name}}", "A")],
        "reqps",
        "Tool calls per second.",
    )
    d.panel(
        "Error ratio by tool",
        [target(error_ratio(tool, "gen_ai_tool_name"), "{{gen_ai_tool_name}}", "A")],
        "percentunit",
        "Share of tool calls that failed (the run goes on: the model sees the error).",
    )
    d.panel(
        "Duration p95 by tool",
        [target(quantile(0.95, tool, "gen_ai_tool_name"), "{{gen_ai_tool_name}}", "A", True)],
        "s",
        "Tool call latency.",
    )

    d.row("Batch")
    d.panel(
        "Queue depth and in progress",
        [
            target(f"sum(agentwatch_batch_queue_depth{{{SEL}}})", "queued", "A"),
            target(f"sum(agentwatch_batch_tasks_in_progress{{{SEL}}})", "in progress", "B"),
        ],
        "short",
        "Tasks waiting and tasks being worked.",
    )
    d.panel(
        "Queue wait p95 by priority",
        [
            target(
                quantile(0.95, "agentwatch_batch_queue_wait_seconds", "priority"),
                "priority {{priority}}",
                "A",
                True,
            )
        ],
        "s",
        "Enqueue to start.",
    )
    d.panel(
        "Outcomes",
        [target(rate("agentwatch_batch_tasks_total", by="status"), "{{status}}", "A")],
        "ops",
        "Finished tasks per second by status.",
    )
    d.panel(
        "Task duration p95 by status",
        [
            target(
                quantile(0.95, "agentwatch_batch_task_duration_seconds", "status"),
                "{{status}}",
                "A",
                True,
            )
        ],
        "s",
        "Work time of a task (its queue wait not included), by how it ended.",
    )

    d.row("Retries")
    d.panel(
        "Attempts by outcome",
        [
            target(
                rate("agentwatch_retry_attempts_total", by="operation, outcome"),
                "{{operation}} {{outcome}}",
                "A",
            )
        ],
        "ops",
        "Every attempt of a retried call: success, retry (another attempt follows), giveup.",
    )
    d.panel(
        "Time spent backing off",
        [
            target(
                rate("agentwatch_retry_backoff_seconds_sum", by="operation"), "{{operation}}", "A"
            )
        ],
        "s",
        "Seconds of waiting per second, by operation.",
    )

    d.row("HTTP API")
    d.panel(
        "Requests by route and status",
        [
            target(
                rate(
                    "http_server_request_duration_seconds_count",
                    by="http_route, http_response_status_code",
                ),
                "{{http_route}} {{http_response_status_code}}",
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
                quantile(0.95, "http_server_request_duration_seconds", "http_route"),
                "{{http_route}}",
                "A",
            )
        ],
        "s",
        "Request duration by route template.",
    )

    d.row("Telemetry health")
    d.panel(
        "Spans dropped",
        [target(rate("agentwatch_telemetry_spans_dropped_total", by="reason"), "{{reason}}", "A")],
        "short",
        "Spans lost because the trace backend was slow or down; requests are unaffected.",
    )
    lag_max = f"max_over_time(agentwatch_event_loop_lag_max_seconds{{{SEL}}}[{RI}])"
    d.panel(
        "Event loop lag",
        [
            target(f"max by (instance) ({lag_max})", "max {{instance}}", "A"),
            target(quantile(0.99, "agentwatch_event_loop_lag_seconds"), "p99", "B"),
        ],
        "s",
        "How late the service's event loop runs a timer; every run and request waits as "
        "long. max is the worst stall (a freeze shows there; p99 hides it among 50 samples/s).",
    )
    d.panel(
        "Event loop time stalled",
        [target(rate("agentwatch_event_loop_lag_seconds_sum", by="instance"), "{{instance}}", "A")],
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
