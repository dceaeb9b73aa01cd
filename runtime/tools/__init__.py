"""Async tools registered by name; built-ins: ``calculator`` and ``search``."""

from .calculator import CalculatorError, evaluate
from .registry import ToolError, ToolRegistry, ToolSpec, builtin_tools
from .search import BUNDLED_CORPUS, SearchError, SearchIndex

__all__ = [
    "BUNDLED_CORPUS",
    "CalculatorError",
    "SearchError",
    "SearchIndex",
    "ToolError",
    "ToolRegistry",
    "ToolSpec",
    "builtin_tools",
    "evaluate",
]
