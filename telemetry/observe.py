"""``observe()``: time any async code as a span plus a histogram sample with exemplar.

Usable three ways, each recording the same span and metric::

    async with observe("fetch", url=url): ...

    @observe("fetch")
    async def fetch(url): ...

    @observe("pages")
    async def pages():  # the span stays open until the generator finishes or is closed
        yield ...

For an async generator the span is current only while the generator's own code runs,
never across a ``yield`` (the consumer's code is not part of it). ``observe()`` records
with the process's telemetry (``setup_telemetry()``), looked up when each operation
starts; ``Telemetry.observe()`` with a given one.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.util.types import AttributeValue

from ._operation import Observation, OperationInvocation
from .setup import get_telemetry

__all__ = ["Observation", "observe"]


def _start_in_process(
    operation: str, attributes: Mapping[str, AttributeValue]
) -> OperationInvocation:
    return get_telemetry().start_operation(operation, attributes)


def observe(operation: str, **attributes: AttributeValue) -> Observation:
    """Time ``operation`` with the process's telemetry (``setup_telemetry()``)."""
    return Observation(operation, attributes, _start_in_process)
