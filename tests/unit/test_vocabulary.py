"""One vocabulary: every name users depend on is written once, in telemetry/names.py.

The telemetry modules and the dashboard generator use the constants; a string literal
equal to one of those names anywhere else is a second definition that can drift.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from agentwatch.telemetry import names as n

ROOT = Path(__file__).resolve().parents[2]
TELEMETRY = ROOT / "telemetry"

# The names a second spelling of would break a dashboard, an alert or a query.
VOCABULARY = {
    value: name
    for name, value in vars(n).items()
    if isinstance(value, str)
    and name.startswith(("M_", "OP_", "SPAN_", "STATUS_", "SHED_", "TOKEN_"))
} | {n.CANCELLED: "CANCELLED"}


def literals(path: Path) -> list[tuple[int, str]]:
    """String constants of a module, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def second_spellings(path: Path) -> list[str]:
    found = []
    for line, text in literals(path):
        for value, name in VOCABULARY.items():
            # a metric name also counts inside a PromQL string
            if text == value or (name.startswith("M_") and value in text):
                found.append(f"{path.relative_to(ROOT)}:{line}: {text!r} (names.{name})")
    return found


@pytest.mark.parametrize(
    "module",
    sorted(p.name for p in TELEMETRY.glob("*.py") if p.name != "names.py"),
)
def test_telemetry_modules_use_the_names_constants(module: str) -> None:
    assert second_spellings(TELEMETRY / module) == []


def test_the_dashboard_generator_draws_its_names_from_telemetry() -> None:
    assert second_spellings(ROOT / "dashboards" / "generate.py") == []


def test_batch_statuses_are_the_catalogs_declared_series() -> None:
    from prometheus_client import CollectorRegistry

    from agentwatch.telemetry import MetricCatalog

    registry = CollectorRegistry()
    MetricCatalog.create(registry)
    declared = {
        sample.labels["status"]
        for family in registry.collect()
        if family.name == n.M_BATCH_TASKS
        for sample in family.samples
    }
    assert declared == set(n.BATCH_STATUSES)
    assert n.CANCELLED in n.BATCH_STATUSES
    assert set(n.BATCH_FAILED_STATUSES) < set(n.BATCH_STATUSES)
