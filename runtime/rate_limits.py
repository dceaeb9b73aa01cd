"""Client-side rate limits per model, as configured: ``AGENTWATCH_RATE_LIMIT_RPM`` and
``AGENTWATCH_RATE_LIMIT_TPM``.

Each is a comma-separated list of limits per minute: a bare number for every model, and
``model=number`` for one model (it wins over the bare number)::

    AGENTWATCH_RATE_LIMIT_RPM=600                      # every model: 600 requests/min
    AGENTWATCH_RATE_LIMIT_TPM=200000,gpt-4o=30000      # gpt-4o 30,000 tokens/min, others 200,000
    AGENTWATCH_RATE_LIMIT_RPM=gpt-4o-mini=5000         # only gpt-4o-mini is limited

A model name is everything before the last ``=`` (names may hold ``:``, ``/``, ``.``).
Anything else is refused at start-up with a message that shows the syntax.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

AGENTWATCH_RATE_LIMIT_RPM: Final = "AGENTWATCH_RATE_LIMIT_RPM"
AGENTWATCH_RATE_LIMIT_TPM: Final = "AGENTWATCH_RATE_LIMIT_TPM"
SYNTAX: Final = "a number per minute for every model and/or model=number, comma-separated"
EXAMPLE: Final = "600 or 600,gpt-4o=100"


class RateLimitSyntaxError(ValueError):
    """A limit list that does not parse; the message says what was wrong and the syntax."""


@dataclass(frozen=True, slots=True)
class PerModel:
    """A limit per minute for every model (``default``, None: none) and per model."""

    default: int | None = None
    models: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        values = [*self.models.values(), *([self.default] if self.default is not None else [])]
        if any(value < 1 for value in values):
            raise RateLimitSyntaxError(f"every limit must be at least 1 per minute, got {values}")

    def of(self, model: str) -> int | None:
        """The limit per minute of ``model`` (None: not limited)."""
        return self.models.get(model, self.default)

    def __bool__(self) -> bool:
        return self.default is not None or bool(self.models)

    @classmethod
    def parse(cls, text: str) -> PerModel:
        """``"600"``, ``"600,gpt-4o=100"``, ``"gpt-4o=100"``; "" is no limit at all."""
        default: int | None = None
        models: dict[str, int] = {}
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            name, sep, number = item.rpartition("=")
            name = name.strip()
            if sep and not name:
                raise RateLimitSyntaxError(f"{item!r} names no model ({SYNTAX}, e.g. {EXAMPLE})")
            value = _per_minute(number.strip(), item)
            if not sep:
                if default is not None:
                    raise RateLimitSyntaxError(f"two limits for every model: {default} and {value}")
                default = value
            elif name in models:
                raise RateLimitSyntaxError(f"two limits for {name}: {models[name]} and {value}")
            else:
                models[name] = value
        return cls(default, MappingProxyType(models))


def _per_minute(number: str, item: str) -> int:
    try:
        value = int(number)
    except ValueError:
        raise RateLimitSyntaxError(
            f"{item!r} is not a whole number per minute ({SYNTAX}, e.g. {EXAMPLE})"
        ) from None
    if value < 1:
        raise RateLimitSyntaxError(f"{item!r}: a limit must be at least 1 per minute")
    return value


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Requests and tokens per minute, per model."""

    rpm: PerModel = field(default_factory=PerModel)
    tpm: PerModel = field(default_factory=PerModel)

    def __bool__(self) -> bool:
        return bool(self.rpm) or bool(self.tpm)
