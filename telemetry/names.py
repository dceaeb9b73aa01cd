"""Every name users depend on: span names, attribute keys, metric names, buckets.

Semantic-convention names come from ``opentelemetry.semconv``; our own live under the
``agentwatch.`` attribute namespace and the ``agentwatch_`` metric prefix. Dashboards,
alert rules and docs use exactly these strings (see docs/architecture.md).
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai
from opentelemetry.semconv.attributes import error_attributes as _error

# --- operation names (semconv: gen_ai.operation.name) -------------------------------
OP_CHAT: Final = _gen_ai.GenAiOperationNameValues.CHAT.value
OP_EXECUTE_TOOL: Final = _gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value
OP_INVOKE_AGENT: Final = _gen_ai.GenAiOperationNameValues.INVOKE_AGENT.value
# our own operations' span names (a retry attempt's is followed by the operation retried)
SPAN_BATCH: Final = "batch"  # the observe() operation around a whole batch run
SPAN_BATCH_TASK: Final = "batch_task"
SPAN_RETRY_ATTEMPT: Final = "retry_attempt"

# gen_ai_client_token_usage{gen_ai_token_type}
TOKEN_INPUT: Final = _gen_ai.GenAiTokenTypeValues.INPUT.value
TOKEN_OUTPUT: Final = _gen_ai.GenAiTokenTypeValues.COMPLETION.value

# --- span attribute keys (semconv first) -------------------------------------------
ERROR_TYPE: Final = _error.ERROR_TYPE
GEN_AI_OPERATION_NAME: Final = _gen_ai.GEN_AI_OPERATION_NAME
GEN_AI_PROVIDER_NAME: Final = _gen_ai.GEN_AI_PROVIDER_NAME
GEN_AI_REQUEST_MODEL: Final = _gen_ai.GEN_AI_REQUEST_MODEL
GEN_AI_RESPONSE_MODEL: Final = _gen_ai.GEN_AI_RESPONSE_MODEL
GEN_AI_RESPONSE_ID: Final = _gen_ai.GEN_AI_RESPONSE_ID
GEN_AI_RESPONSE_FINISH_REASONS: Final = _gen_ai.GEN_AI_RESPONSE_FINISH_REASONS
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = _gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK
GEN_AI_USAGE_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_INPUT_TOKENS
GEN_AI_USAGE_OUTPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
# token detail (input tokens include the cached ones; output tokens the reasoning ones)
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = _gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS
GEN_AI_AGENT_NAME: Final = _gen_ai.GEN_AI_AGENT_NAME
GEN_AI_TOOL_NAME: Final = _gen_ai.GEN_AI_TOOL_NAME
GEN_AI_TOOL_CALL_ID: Final = _gen_ai.GEN_AI_TOOL_CALL_ID
GEN_AI_TOOL_TYPE: Final = _gen_ai.GEN_AI_TOOL_TYPE
GEN_AI_CONVERSATION_ID: Final = _gen_ai.GEN_AI_CONVERSATION_ID
GEN_AI_INPUT_MESSAGES: Final = _gen_ai.GEN_AI_INPUT_MESSAGES
GEN_AI_OUTPUT_MESSAGES: Final = _gen_ai.GEN_AI_OUTPUT_MESSAGES
GEN_AI_TOOL_CALL_ARGUMENTS: Final = _gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS
GEN_AI_TOOL_CALL_RESULT: Final = _gen_ai.GEN_AI_TOOL_CALL_RESULT

AGENTWATCH_OPERATION: Final = "agentwatch.operation"
AGENTWATCH_OUTCOME: Final = "agentwatch.outcome"
AGENTWATCH_BATCH_ID: Final = "agentwatch.batch.id"
AGENTWATCH_TASK_ID: Final = "agentwatch.task.id"
AGENTWATCH_TASK_PRIORITY: Final = "agentwatch.task.priority"
AGENTWATCH_TASK_QUEUE_WAIT: Final = "agentwatch.task.queue_wait"
AGENTWATCH_TASK_STATUS: Final = "agentwatch.task.status"
AGENTWATCH_RETRY_ATTEMPT: Final = "agentwatch.retry.attempt"
AGENTWATCH_RETRY_WAIT: Final = "agentwatch.retry.wait"
AGENTWATCH_RETRY_OUTCOME: Final = "agentwatch.retry.outcome"
# Cost, after the open proposal for gen_ai.usage.cost.* (semantic-conventions-genai #443:
# amount + ISO 4217 currency, on inference spans only) under our namespace until it is
# merged. A call's cost is on its chat span; the totals of a run and of a batch task
# have keys of their own, so that summing the calls' amounts never counts one twice.
AGENTWATCH_USAGE_COST_AMOUNT: Final = "agentwatch.usage.cost.amount"
AGENTWATCH_USAGE_COST_CURRENCY: Final = "agentwatch.usage.cost.currency"
AGENTWATCH_USAGE_COST_UNPRICED: Final = "agentwatch.usage.cost.unpriced"  # True: no price
AGENTWATCH_RUN_COST_AMOUNT: Final = "agentwatch.run.cost.amount"
AGENTWATCH_RUN_BUDGET: Final = "agentwatch.run.budget"  # USD, when the run has one
AGENTWATCH_TASK_COST_AMOUNT: Final = "agentwatch.task.cost.amount"
CURRENCY_USD: Final = "USD"  # every amount agentwatch records
AGENTWATCH_RATE_LIMIT_WAIT: Final = "agentwatch.rate_limit.wait"  # seconds, on a chat span

# agentwatch_retry_attempts_total{outcome}
RETRY_SUCCESS: Final = "success"
RETRY_RETRY: Final = "retry"
RETRY_GIVEUP: Final = "giveup"  # a transient error, and no attempt or time left
RETRY_FAILED: Final = "failed"  # an error not worth another attempt (a 400, a bug)
RETRY_OUTCOMES: Final = (RETRY_SUCCESS, RETRY_RETRY, RETRY_GIVEUP, RETRY_FAILED)

# A cancelled operation, one word everywhere: the span's outcome, its error_type label
# (not empty: it did not succeed; not a class name: it did not fail; error ratios
# exclude it), a batch task's status, the reason a run was shed.
CANCELLED: Final = "cancelled"

# Outcomes: span attribute values (agentwatch.outcome).
OUTCOME_OK: Final = "ok"
OUTCOME_ERROR: Final = "error"
OUTCOME_CANCELLED: Final = CANCELLED

# How a batch task ended: agentwatch_batch_tasks_total{status}, the agentwatch.task.status
# attribute, the status in a result file and in the HTTP API.
STATUS_COMPLETED: Final = "completed"
STATUS_FAILED: Final = "failed"
STATUS_TIMED_OUT: Final = "timed_out"
STATUS_CANCELLED: Final = CANCELLED
BATCH_STATUSES: Final = (STATUS_COMPLETED, STATUS_FAILED, STATUS_TIMED_OUT, STATUS_CANCELLED)
BATCH_FAILED_STATUSES: Final = (STATUS_FAILED, STATUS_TIMED_OUT)  # what counts as an error

# The conventions' fallback for a label value outside its allowlist.
OTHER: Final = "_OTHER"

# --- metric names (Prometheus form) ------------------------------------------------
M_GEN_AI_OPERATION_DURATION: Final = "gen_ai_client_operation_duration_seconds"
M_GEN_AI_TOKEN_USAGE: Final = "gen_ai_client_token_usage"
M_GEN_AI_TIME_TO_FIRST_CHUNK: Final = "gen_ai_client_operation_time_to_first_chunk_seconds"
M_GEN_AI_TIME_PER_OUTPUT_CHUNK: Final = "gen_ai_client_operation_time_per_output_chunk_seconds"
M_GEN_AI_INVOKE_AGENT_DURATION: Final = "gen_ai_invoke_agent_duration_seconds"
M_GEN_AI_EXECUTE_TOOL_DURATION: Final = "gen_ai_execute_tool_duration_seconds"
M_BATCH_TASKS: Final = "agentwatch_batch_tasks"  # counter: exposed as ..._total
M_BATCH_TASK_DURATION: Final = "agentwatch_batch_task_duration_seconds"
M_BATCH_QUEUE_WAIT: Final = "agentwatch_batch_queue_wait_seconds"
M_BATCH_QUEUE_DEPTH: Final = "agentwatch_batch_queue_depth"
M_BATCH_IN_PROGRESS: Final = "agentwatch_batch_tasks_in_progress"
M_RETRY_ATTEMPTS: Final = "agentwatch_retry_attempts"  # counter: exposed as ..._total
M_RETRY_BACKOFF: Final = "agentwatch_retry_backoff_seconds"
M_OPERATION_DURATION: Final = "agentwatch_operation_duration_seconds"
M_HTTP_SERVER_DURATION: Final = "http_server_request_duration_seconds"
M_SPANS_DROPPED: Final = "agentwatch_telemetry_spans_dropped"  # counter: ..._total
M_EVENT_LOOP_LAG: Final = "agentwatch_event_loop_lag_seconds"
M_EVENT_LOOP_LAG_MAX: Final = "agentwatch_event_loop_lag_max_seconds"
M_ADMISSION_SHED: Final = "agentwatch_admission_shed"  # counter: ..._total
M_COST: Final = "agentwatch_cost_usd"  # counter: exposed as agentwatch_cost_usd_total
M_UNPRICED_CALLS: Final = "agentwatch_unpriced_calls"  # counter: ..._total
M_RUN_COST: Final = "agentwatch_run_cost_usd"  # histogram: the cost of each agent run
# its reasons: a run got no slot before its deadline, its caller went away waiting, or
# the wait queue was full when it came
SHED_TIMEOUT: Final = "timeout"
SHED_CANCELLED: Final = CANCELLED
SHED_TOO_MANY_WAITING: Final = "too_many_waiting"
ADMISSION_SHED_REASONS: Final = (SHED_TIMEOUT, SHED_CANCELLED, SHED_TOO_MANY_WAITING)
M_ADMISSION_LIMIT: Final = "agentwatch_admission_limit"  # gauge: runs at once, 0 = none
M_ADMISSION_IN_FLIGHT: Final = "agentwatch_admission_runs_in_flight"
M_ADMISSION_WAITING: Final = "agentwatch_admission_runs_waiting"
M_ADMISSION_WAIT: Final = "agentwatch_admission_wait_seconds"
M_RATE_LIMIT_WAIT: Final = "agentwatch_rate_limit_wait_seconds"
# gauge {gen_ai_request_model, kind}: the rate a model's bucket runs at, per minute
M_RATE_LIMIT: Final = "agentwatch_rate_limit_per_minute"
RATE_LIMIT_KINDS: Final = ("requests", "tokens")  # its kind label: requests or tokens
# The batch queue on Redis (runtime/batch/redis_queue.py), as each worker reads it there
# (waiting, pending: a gauge by state) and what this process did to it (reclaims, dead
# letters); the calls of this process retried while Redis did not answer.
M_REDIS_QUEUE_TASKS: Final = "agentwatch_redis_queue_tasks"  # gauge {state}
M_REDIS_QUEUE_RECLAIMS: Final = "agentwatch_redis_queue_reclaims"  # counter: ..._total
M_REDIS_QUEUE_DEAD_LETTERS: Final = "agentwatch_redis_queue_dead_letters"  # counter: ..._total
M_REDIS_RETRIES: Final = "agentwatch_redis_retries"  # counter: ..._total
QUEUE_WAITING: Final = "waiting"  # in a stream, not yet taken by a worker
QUEUE_PENDING: Final = "pending"  # taken by a worker, not yet acknowledged
QUEUE_STATES: Final = (QUEUE_WAITING, QUEUE_PENDING)

# --- label names (Prometheus form of the attribute keys) ---------------------------
L_OPERATION: Final = "operation"
L_ERROR_TYPE: Final = "error_type"
L_GEN_AI_OPERATION_NAME: Final = "gen_ai_operation_name"
L_GEN_AI_PROVIDER_NAME: Final = "gen_ai_provider_name"
L_GEN_AI_REQUEST_MODEL: Final = "gen_ai_request_model"
L_GEN_AI_TOKEN_TYPE: Final = "gen_ai_token_type"
L_GEN_AI_AGENT_NAME: Final = "gen_ai_agent_name"
L_GEN_AI_TOOL_NAME: Final = "gen_ai_tool_name"
L_STATUS: Final = "status"
L_PRIORITY: Final = "priority"
L_OUTCOME: Final = "outcome"
L_REASON: Final = "reason"
L_STATE: Final = "state"
L_KIND: Final = "kind"
L_HTTP_METHOD: Final = "http_request_method"
L_HTTP_ROUTE: Final = "http_route"
L_HTTP_STATUS: Final = "http_response_status_code"

# --- buckets: open-telemetry/semantic-conventions-genai, gen-ai-metrics.md ---------
DURATION_BUCKETS: Final = tuple(round(0.01 * 2**i, 2) for i in range(14))  # 0.01 .. 81.92 s
AGENT_DURATION_BUCKETS: Final = tuple(round(0.1 * 2**i, 1) for i in range(13))  # 0.1 .. 409.6 s
TOKEN_BUCKETS: Final = tuple(float(4**i) for i in range(14))  # 1 .. 67108864
# HTTP server semconv buckets (http-metrics.md).
HTTP_DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
# Cost of one agent run, USD: $0.00001 (a few hundred tokens of a small model) to $10.
COST_BUCKETS: Final = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Event loop lag: how late a timer fires; 100 ms is where users notice.
LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Our own operations: from 1 ms, so that fast in-process work is still resolved.
OPERATION_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
)  # fmt: skip
