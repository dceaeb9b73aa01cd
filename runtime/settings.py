"""Runtime settings from the environment: which model, where to serve, limits."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from agentwatch.telemetry import ConfigurationError

from .model.behavior import DEFAULT_MODEL

OPENAI_API_KEY: Final = "OPENAI_API_KEY"
OPENAI_BASE_URL: Final = "OPENAI_BASE_URL"
AGENTWATCH_MODEL: Final = "AGENTWATCH_MODEL"
AGENTWATCH_HOST: Final = "AGENTWATCH_HOST"
AGENTWATCH_PORT: Final = "AGENTWATCH_PORT"
AGENTWATCH_API_TOKEN: Final = "AGENTWATCH_API_TOKEN"
AGENTWATCH_METRICS_TOKEN: Final = "AGENTWATCH_METRICS_TOKEN"
AGENTWATCH_CORPUS_DIR: Final = "AGENTWATCH_CORPUS_DIR"
AGENTWATCH_RUN_TIMEOUT: Final = "AGENTWATCH_RUN_TIMEOUT"
AGENTWATCH_MODEL_TIMEOUT: Final = "AGENTWATCH_MODEL_TIMEOUT"
AGENTWATCH_BUILTIN_LATENCY: Final = "AGENTWATCH_BUILTIN_LATENCY"
AGENTWATCH_MAX_CONCURRENT_RUNS: Final = "AGENTWATCH_MAX_CONCURRENT_RUNS"

DEFAULT_OPENAI_MODEL: Final = "gpt-4o-mini"


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """``api_key`` None means the builtin model, started in-process on loopback."""

    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    model: str = DEFAULT_MODEL
    host: str = "127.0.0.1"
    port: int = 8080
    api_token: str | None = field(default=None, repr=False)
    metrics_token: str | None = field(default=None, repr=False)
    corpus_dir: Path | None = None
    run_timeout: float = 120.0
    model_timeout: float = 60.0
    builtin_latency: float = 0.0  # seconds per answer of the builtin model (demos, tests)
    max_concurrent_runs: int = 64  # admission: more runs wait for a slot (0: no limit)
    max_input_chars: int = 32_000
    max_body_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"{AGENTWATCH_PORT}={self.port} is not a TCP port")
        if not self.run_timeout > 0:
            raise ConfigurationError(f"{AGENTWATCH_RUN_TIMEOUT} must be positive")
        if self.max_concurrent_runs < 0:
            raise ConfigurationError(f"{AGENTWATCH_MAX_CONCURRENT_RUNS} must not be negative")
        if self.builtin_latency < 0:
            raise ConfigurationError(f"{AGENTWATCH_BUILTIN_LATENCY} must not be negative")
        if not self.model_timeout > 0:
            raise ConfigurationError(f"{AGENTWATCH_MODEL_TIMEOUT} must be positive")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{OPENAI_BASE_URL}={self.base_url!r} is not an http(s) URL")

    @property
    def uses_builtin_model(self) -> bool:
        return not self.api_key

    @property
    def provider(self) -> str:
        """The ``gen_ai.provider.name``: openai, or ours for the builtin model."""
        if self.uses_builtin_model:
            return "agentwatch"
        return "openai"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RuntimeSettings:
        e = os.environ if env is None else env
        api_key = e.get(OPENAI_API_KEY) or None
        model = e.get(AGENTWATCH_MODEL) or (DEFAULT_OPENAI_MODEL if api_key else DEFAULT_MODEL)
        corpus = e.get(AGENTWATCH_CORPUS_DIR)
        return cls(
            api_key=api_key,
            base_url=e.get(OPENAI_BASE_URL) or None,
            model=model,
            host=e.get(AGENTWATCH_HOST) or "127.0.0.1",
            port=_number(e, AGENTWATCH_PORT, 8080, int),
            api_token=e.get(AGENTWATCH_API_TOKEN) or None,
            metrics_token=e.get(AGENTWATCH_METRICS_TOKEN) or None,
            corpus_dir=Path(corpus) if corpus else None,
            run_timeout=_number(e, AGENTWATCH_RUN_TIMEOUT, 120.0, float),
            model_timeout=_number(e, AGENTWATCH_MODEL_TIMEOUT, 60.0, float),
            builtin_latency=_number(e, AGENTWATCH_BUILTIN_LATENCY, 0.0, float),
            max_concurrent_runs=_number(e, AGENTWATCH_MAX_CONCURRENT_RUNS, 64, int),
        )


N = TypeVar("N", int, float)


def _number(env: Mapping[str, str], key: str, default: N, kind: type[N]) -> N:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigurationError(f"{key}={raw!r} is not a {kind.__name__}") from None
