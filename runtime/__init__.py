"""agentwatch.runtime: LangChain agents, tools, retries, batches and the service, observed."""

from .agents.agent import Agent, AgentInputError, AgentRunError, RunTimeoutError, StepLimitError
from .agents.agent_runtime import AgentRuntime
from .batch import BatchOptions, BatchProcessor, ResultStore, Task, TaskStatus
from .builtin_model import BuiltinModelServer, ModelBehavior
from .builtin_model.in_process import BuiltinChatModel
from .events import RunEvent, RunFinished, TextDelta, ToolCallFinished, ToolCallStarted
from .http.serving import BindError, make_runner, run_service, start_site
from .langchain.callbacks import AgentwatchCallbackHandler
from .langchain.chat_model import InstrumentedChatModel, InstrumentedChatOpenAI
from .langchain.instrumentor import AgentwatchInstrumentor
from .results import RunResult, ToolCallRecord, Usage
from .retry import Retrier, RetryPolicy
from .service.app import create_app
from .settings import RuntimeSettings
from .tools import InvalidToolError, ToolError, ToolRegistry, ToolSpec

__all__ = [
    "Agent",
    "AgentInputError",
    "AgentRunError",
    "AgentRuntime",
    "AgentwatchCallbackHandler",
    "AgentwatchInstrumentor",
    "BatchOptions",
    "BatchProcessor",
    "BindError",
    "BuiltinChatModel",
    "BuiltinModelServer",
    "InstrumentedChatModel",
    "InstrumentedChatOpenAI",
    "InvalidToolError",
    "ModelBehavior",
    "ResultStore",
    "Retrier",
    "RetryPolicy",
    "RunEvent",
    "RunFinished",
    "RunResult",
    "RunTimeoutError",
    "RuntimeSettings",
    "StepLimitError",
    "Task",
    "TaskStatus",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallRecord",
    "ToolCallStarted",
    "ToolError",
    "ToolRegistry",
    "ToolSpec",
    "Usage",
    "create_app",
    "make_runner",
    "run_service",
    "start_site",
]
