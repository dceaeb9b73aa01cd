"""How the builtin model behaves: latency, streaming pace, injected faults, a script."""

from __future__ import annotations

from dataclasses import dataclass

from .brain import Reply

DEFAULT_MODEL = "agentwatch-builtin"


@dataclass(frozen=True, slots=True)
class ModelBehavior:
    """Timing and faults, seeded so a run can be repeated exactly.

    latency: seconds before a non-streamed answer.
    time_to_first_token: seconds before the first streamed chunk.
    tokens_per_second: streaming pace after the first chunk (0: as fast as possible).
    fail_first: the first N requests fail with ``fail_status``.
    error_rate: share of later requests that fail with ``fail_status``.
    fail_status: 429 (with Retry-After) or a 5xx.
    retry_after: seconds sent in Retry-After with a 429 (None: no header).
    hang_first: the first N requests (after ``fail_first``) hang.
    hang_rate: share of requests that answer nothing for ``hang_for`` seconds, then 504.
    disconnect_rate: share of streamed requests whose connection is closed mid-stream.
    script: replies given in order instead of the brain's (``script.py``): a ``Reply``
        or a string each; when they are used up, the brain answers.
    rate_limit_rpm, rate_limit_tpm: requests / tokens per minute it serves (None: no
        limit), each bucket holding ``rate_limit_burst`` seconds of its rate (``limits.py``:
        OpenAI's x-ratelimit-* headers on every answer, 429 past a limit).
    """

    latency: float = 0.0
    time_to_first_token: float = 0.0
    tokens_per_second: float = 0.0
    fail_first: int = 0
    error_rate: float = 0.0
    fail_status: int = 429
    retry_after: float | None = 1.0
    hang_first: int = 0
    hang_rate: float = 0.0
    hang_for: float = 30.0
    disconnect_rate: float = 0.0
    seed: int = 0
    models: tuple[str, ...] = (DEFAULT_MODEL,)
    script: tuple[Reply | str, ...] = ()
    rate_limit_rpm: int | None = None
    rate_limit_tpm: int | None = None
    rate_limit_burst: float = 60.0

    def __post_init__(self) -> None:
        for name in ("latency", "time_to_first_token", "tokens_per_second", "hang_for"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("error_rate", "hang_rate", "disconnect_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.fail_first < 0 or self.hang_first < 0:
            raise ValueError("fail_first and hang_first must not be negative")
        if not 400 <= self.fail_status <= 599:
            raise ValueError("fail_status must be an HTTP error status (400-599)")
        for name in ("rate_limit_rpm", "rate_limit_tpm"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 per minute")
        if not self.rate_limit_burst > 0:
            raise ValueError("rate_limit_burst must be positive")
        if not self.models:
            raise ValueError("models must name at least one model")
        object.__setattr__(self, "script", tuple(self.script))  # a list given: kept as given
        if not all(isinstance(reply, Reply | str) for reply in self.script):
            raise ValueError("script must hold Reply objects or strings")
