"""Runtime settings from the environment: which model, where to serve, limits."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from agentwatch.telemetry import ConfigurationError

from .builtin_model.behavior import DEFAULT_MODEL
from .rate_limits import (
    AGENTWATCH_RATE_LIMIT_RPM,
    AGENTWATCH_RATE_LIMIT_TPM,
    PerModel,
    RateLimits,
    RateLimitSyntaxError,
)

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
AGENTWATCH_TEMPERATURE: Final = "AGENTWATCH_TEMPERATURE"
AGENTWATCH_MAX_TOKENS: Final = "AGENTWATCH_MAX_TOKENS"
AGENTWATCH_BUILTIN_LATENCY: Final = "AGENTWATCH_BUILTIN_LATENCY"
AGENTWATCH_MAX_CONCURRENT_RUNS: Final = "AGENTWATCH_MAX_CONCURRENT_RUNS"
AGENTWATCH_ADMISSION_MAX_WAITING: Final = "AGENTWATCH_ADMISSION_MAX_WAITING"
AGENTWATCH_ADMISSION_TIMEOUT: Final = "AGENTWATCH_ADMISSION_TIMEOUT"
AGENTWATCH_ADMISSION_TARGET_LAG: Final = "AGENTWATCH_ADMISSION_TARGET_LAG"
AGENTWATCH_BUILTIN_RATE_LIMIT_RPM: Final = "AGENTWATCH_BUILTIN_RATE_LIMIT_RPM"
AGENTWATCH_BUILTIN_RATE_LIMIT_TPM: Final = "AGENTWATCH_BUILTIN_RATE_LIMIT_TPM"
AGENTWATCH_MAX_RUNNING_BATCHES: Final = "AGENTWATCH_MAX_RUNNING_BATCHES"
AGENTWATCH_MAX_BATCH_QUEUED_TASKS: Final = "AGENTWATCH_MAX_BATCH_QUEUED_TASKS"
AGENTWATCH_MAX_BATCH_KEPT_TASKS: Final = "AGENTWATCH_MAX_BATCH_KEPT_TASKS"
AGENTWATCH_RUN_BUDGET_USD: Final = "AGENTWATCH_RUN_BUDGET_USD"
AGENTWATCH_REDIS_URL: Final = "AGENTWATCH_REDIS_URL"
AGENTWATCH_REDIS_CONCURRENCY: Final = "AGENTWATCH_REDIS_CONCURRENCY"

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
    temperature: float | None = None  # None: the model's own default (not sent)
    max_tokens: int | None = None  # of each answer; None: the model's own limit
    builtin_latency: float = 0.0  # seconds per answer of the builtin model (demos, tests)
    # admission: runs at once, more wait for a slot; None (unset): adaptive, 0: no limit
    max_concurrent_runs: int | None = None
    admission_max_waiting: int = 1000  # interactive runs waiting at once; more get 503
    admission_timeout: float = 30.0  # the longest an interactive run waits; then 503
    admission_target_lag: float = 0.05  # s of loop lag (p99) the adaptive limit steers to
    # client-side, per model: AGENTWATCH_RATE_LIMIT_RPM / _TPM (rate_limits.py)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    builtin_rate_limit_rpm: int | None = None  # the builtin model's own limits (None: none)
    builtin_rate_limit_tpm: int | None = None
    max_input_chars: int = 32_000
    max_body_bytes: int = 1024 * 1024
    # /v1/batches, per process: a batch past either of the first two gets 429 + Retry-After
    max_running_batches: int = 8
    max_batch_queued_tasks: int = 20_000  # tasks not yet finished, all running batches
    max_batch_kept_tasks: int = 50_000  # tasks of finished batches kept to be read
    # USD a run may spend on model calls, then it stops (budget_exceeded); a run may ask
    # for less (/v1/runs budget_usd), never more. None: no limit.
    run_budget_usd: float | None = None
    # /v1/batches on Redis (docs/scale-out.md): set, batches go to its queue and this
    # service works the queue too, redis_concurrency tasks at once (0: only workers do)
    redis_url: str | None = field(default=None, repr=False)
    redis_concurrency: int = 8

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem is not None:
            field_name, text = problem
            raise SettingError(field_name, text, field_name)

    def problem(self) -> tuple[str, str] | None:
        """The first invalid field and what is wrong with it (None: all valid)."""
        if not 0 <= self.port <= 65535:
            return "port", f"must be 0-65535, got {self.port}"
        if not self.run_timeout > 0:
            return "run_timeout", f"must be positive, got {self.run_timeout:g}"
        if self.max_concurrent_runs is not None and self.max_concurrent_runs < 0:
            return "max_concurrent_runs", f"must not be negative, got {self.max_concurrent_runs}"
        if self.admission_max_waiting < 1:
            return "admission_max_waiting", f"must be at least 1, got {self.admission_max_waiting}"
        if not self.admission_timeout > 0:
            return "admission_timeout", f"must be positive, got {self.admission_timeout:g}"
        if not self.admission_target_lag > 0:
            return "admission_target_lag", f"must be positive, got {self.admission_target_lag:g}"
        for name in ("max_running_batches", "max_batch_queued_tasks", "max_batch_kept_tasks"):
            if getattr(self, name) < 1:
                return name, f"must be at least 1, got {getattr(self, name)}"
        if self.run_budget_usd is not None and not 0 < self.run_budget_usd < math.inf:
            return "run_budget_usd", f"must be a positive amount, got {self.run_budget_usd:g}"
        for name in ("builtin_rate_limit_rpm", "builtin_rate_limit_tpm"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                return name, f"must be at least 1 per minute, got {getattr(self, name)}"
        if self.redis_concurrency < 0:
            return "redis_concurrency", f"must not be negative, got {self.redis_concurrency}"
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            return "redis_url", "must be a redis://, rediss:// or unix:// URL"
        if self.builtin_latency < 0:
            return "builtin_latency", f"must not be negative, got {self.builtin_latency:g}"
        if not self.model_timeout > 0:
            return "model_timeout", f"must be positive, got {self.model_timeout:g}"
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            return "temperature", f"must be 0-2, got {self.temperature:g}"
        if self.max_tokens is not None and self.max_tokens < 1:
            return "max_tokens", f"must be at least 1, got {self.max_tokens}"
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            return "base_url", f"must be an http(s) URL, got {self.base_url!r}"
        return None

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
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
        sources: Mapping[str, str] | None = None,
    ) -> RuntimeSettings:
        """Settings from ``env`` (default ``os.environ``), then ``overrides`` (field: value,
        e.g. from command-line flags; an overridden variable is not even parsed).

        An invalid value is a ``SettingError`` naming what the user wrote: the
        ``sources`` name of an overridden field (``--port``), else the variable.
        """
        e = os.environ if env is None else env
        given = dict(overrides or {})
        named: dict[str, str] = {}
        values: dict[str, Any] = {}
        api_key = e.get(OPENAI_API_KEY) or None
        corpus = e.get(AGENTWATCH_CORPUS_DIR)
        for field_name, key, raw in (
            ("base_url", OPENAI_BASE_URL, e.get(OPENAI_BASE_URL) or None),
            ("model", AGENTWATCH_MODEL, e.get(AGENTWATCH_MODEL) or None),
            ("host", AGENTWATCH_HOST, e.get(AGENTWATCH_HOST) or None),
            ("api_token", AGENTWATCH_API_TOKEN, e.get(AGENTWATCH_API_TOKEN) or None),
            ("metrics_token", AGENTWATCH_METRICS_TOKEN, e.get(AGENTWATCH_METRICS_TOKEN) or None),
            ("corpus_dir", AGENTWATCH_CORPUS_DIR, Path(corpus) if corpus else None),
            ("redis_url", AGENTWATCH_REDIS_URL, e.get(AGENTWATCH_REDIS_URL) or None),
        ):
            if raw is not None:
                values[field_name], named[field_name] = raw, key
        for field_name, key, kind in _NUMBERS:
            if field_name not in given and e.get(key, "").strip():
                values[field_name], named[field_name] = _number(e, key, field_name, kind), key
        if "rate_limits" not in given:
            values["rate_limits"] = _rate_limits(e)
        values.setdefault("model", DEFAULT_OPENAI_MODEL if api_key else DEFAULT_MODEL)
        values.update(given)
        named.update(sources or {})
        try:
            return cls(api_key=api_key, **values)
        except SettingError as exc:
            raise SettingError(named.get(exc.field, exc.field), exc.problem, exc.field) from None


class SettingError(ConfigurationError):
    """A setting cannot take the value it was given. The message names it as the user
    wrote it (``--port``, ``AGENTWATCH_PORT``, or the field); ``field`` is the field."""

    def __init__(self, name: str, problem: str, field_name: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name = name
        self.problem = problem
        self.field = field_name


_NUMBERS: Final[tuple[tuple[str, str, type[int] | type[float]], ...]] = (
    ("port", AGENTWATCH_PORT, int),
    ("run_timeout", AGENTWATCH_RUN_TIMEOUT, float),
    ("model_timeout", AGENTWATCH_MODEL_TIMEOUT, float),
    ("temperature", AGENTWATCH_TEMPERATURE, float),
    ("max_tokens", AGENTWATCH_MAX_TOKENS, int),
    ("builtin_latency", AGENTWATCH_BUILTIN_LATENCY, float),
    ("max_concurrent_runs", AGENTWATCH_MAX_CONCURRENT_RUNS, int),
    ("admission_max_waiting", AGENTWATCH_ADMISSION_MAX_WAITING, int),
    ("admission_timeout", AGENTWATCH_ADMISSION_TIMEOUT, float),
    ("admission_target_lag", AGENTWATCH_ADMISSION_TARGET_LAG, float),
    ("builtin_rate_limit_rpm", AGENTWATCH_BUILTIN_RATE_LIMIT_RPM, int),
    ("builtin_rate_limit_tpm", AGENTWATCH_BUILTIN_RATE_LIMIT_TPM, int),
    ("max_running_batches", AGENTWATCH_MAX_RUNNING_BATCHES, int),
    ("max_batch_queued_tasks", AGENTWATCH_MAX_BATCH_QUEUED_TASKS, int),
    ("max_batch_kept_tasks", AGENTWATCH_MAX_BATCH_KEPT_TASKS, int),
    ("run_budget_usd", AGENTWATCH_RUN_BUDGET_USD, float),
    ("redis_concurrency", AGENTWATCH_REDIS_CONCURRENCY, int),
)


def _number(env: Mapping[str, str], key: str, field_name: str, kind: type[float]) -> float:
    raw = env.get(key, "").strip()
    try:
        return kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise SettingError(key, f"must be {what}, got {raw!r}", field_name) from None


def _rate_limits(env: Mapping[str, str]) -> RateLimits:
    """``AGENTWATCH_RATE_LIMIT_RPM`` / ``_TPM`` parsed (``rate_limits.py``)."""
    parsed = {}
    for kind, key in (("rpm", AGENTWATCH_RATE_LIMIT_RPM), ("tpm", AGENTWATCH_RATE_LIMIT_TPM)):
        try:
            parsed[kind] = PerModel.parse(env.get(key, ""))
        except RateLimitSyntaxError as exc:
            raise SettingError(key, f"is not valid: {exc}", "rate_limits") from None
    return RateLimits(**parsed)
