"""Tools registered by name, checked at registration; built-ins: ``calculator`` and ``search``."""

from .calculator import CalculatorError, evaluate
from .registry import InvalidToolError, ToolError, ToolRegistry, ToolSpec, builtin_tools
from .search import BUNDLED_CORPUS, SearchError, SearchIndex

__all__ = [
    "BUNDLED_CORPUS",
    "CalculatorError",
    "InvalidToolError",
    "SearchError",
    "SearchIndex",
    "ToolError",
    "ToolRegistry",
    "ToolSpec",
    "builtin_tools",
    "evaluate",
]
