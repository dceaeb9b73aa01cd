"""agentwatch.telemetry: spans, metrics and their exposition. Knows nothing of the runtime."""

from ._agent_run import AgentRunInvocation
from ._invocation import (
    Invocation,
    instrument_iter,
    instrument_stream,
    is_cancellation,
    treat_as_control_flow,
)
from ._llm_call import LlmCallInvocation
from ._retry_attempt import RetryAttemptInvocation
from ._spend import Spend, current_spend
from ._tool_call import ToolCallInvocation
from .catalog import MetricCatalog
from .core import Telemetry
from .errors import AgentwatchError, ConfigurationError
from .labels import BoundedLabel
from .loop_lag import loop_lag_ctx, monitor_loop_lag, sample_loop_lag
from .observe import Observation, observe
from .prices import Price, PriceTable
from .report import fetch_metrics_text, format_report, stats_from_registry, stats_from_text
from .settings import TelemetrySettings
from .setup import build_telemetry, get_telemetry, setup_telemetry
from .web import (
    MetricsServer,
    add_telemetry_routes,
    bearer_matches,
    create_metrics_app,
    http_metrics_middleware,
    start_metrics_server,
)

__all__ = [
    "AgentRunInvocation",
    "AgentwatchError",
    "BoundedLabel",
    "ConfigurationError",
    "Invocation",
    "LlmCallInvocation",
    "MetricCatalog",
    "MetricsServer",
    "Observation",
    "Price",
    "PriceTable",
    "RetryAttemptInvocation",
    "Spend",
    "Telemetry",
    "TelemetrySettings",
    "ToolCallInvocation",
    "add_telemetry_routes",
    "bearer_matches",
    "build_telemetry",
    "create_metrics_app",
    "current_spend",
    "fetch_metrics_text",
    "format_report",
    "get_telemetry",
    "http_metrics_middleware",
    "instrument_iter",
    "instrument_stream",
    "is_cancellation",
    "loop_lag_ctx",
    "monitor_loop_lag",
    "observe",
    "sample_loop_lag",
    "setup_telemetry",
    "start_metrics_server",
    "stats_from_registry",
    "stats_from_text",
    "treat_as_control_flow",
]
