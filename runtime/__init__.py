"""agentwatch.runtime: LangChain agents, tools, retries, batches and the service, observed."""

from .agent import Agent, AgentInputError, AgentRunError, RunTimeoutError, StepLimitError
from .batch import BatchOptions, BatchProcessor, ResultStore, Task, TaskStatus
from .callbacks import AgentwatchCallbackHandler
from .chat_model import InstrumentedChatModel, InstrumentedChatOpenAI
from .events import RunEvent, RunFinished, TextDelta, ToolCallFinished, ToolCallStarted
from .model import BuiltinModelServer, ModelBehavior
from .model.chat_model import BuiltinChatModel
from .results import RunResult, ToolCallRecord, Usage
from .retry import Retrier, RetryPolicy
from .runtime import AgentRuntime
from .server import create_app
from .serving import BindError, make_runner, run_service, start_site
from .settings import RuntimeSettings
from .tools import ToolRegistry, ToolSpec

__all__ = [
    "Agent",
    "AgentInputError",
    "AgentRunError",
    "AgentRuntime",
    "AgentwatchCallbackHandler",
    "BatchOptions",
    "BatchProcessor",
    "BindError",
    "BuiltinChatModel",
    "BuiltinModelServer",
    "InstrumentedChatModel",
    "InstrumentedChatOpenAI",
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
    "ToolRegistry",
    "ToolSpec",
    "Usage",
    "create_app",
    "make_runner",
    "run_service",
    "start_site",
]
