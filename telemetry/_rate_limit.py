"""Client-side rate limits: how long a model call waited for its model's budget, and
the rate each model's budget runs at (``agentwatch_rate_limit_per_minute``).

Not an operation of its own: the wait is part of the ``chat`` call it delays, so it is
an attribute of the span current when it ends (the call's, or a retry attempt's) and a
sample of ``agentwatch_rate_limit_wait_seconds{gen_ai_request_model}``.
"""

from __future__ import annotations

from opentelemetry import trace

from . import names as n
from ._recorder import Recorder


class RateLimitMeter:
    """``telemetry.rate_limits``."""

    __slots__ = ("_recorder",)

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def limit(self, model: str, kind: str, per_minute: float) -> None:
        """``model``'s ``kind`` bucket (requests, tokens) now runs at ``per_minute``; a
        kind outside that closed set is not recorded."""
        if kind not in n.RATE_LIMIT_KINDS:
            return
        r = self._recorder
        r.child(r.metrics.rate_limit, r.models(model), kind).set(per_minute)

    def waited(self, model: str, seconds: float) -> None:
        """A call to ``model`` waited ``seconds`` (0: none) for the client-side limit."""
        r = self._recorder
        r.child(r.metrics.rate_limit_wait, r.models(model)).observe(seconds)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(n.AGENTWATCH_RATE_LIMIT_WAIT, seconds)
