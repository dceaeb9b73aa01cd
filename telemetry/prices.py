"""What one model call cost, offline: ``PriceTable.price(provider, model)``.

Prices come from the ``genai-prices`` snapshot bundled in its package (its
``UpdatePrices`` is never started: nothing is fetched at run time) and, winning over it,
a user's own file (``AGENTWATCH_PRICES_FILE``, read and checked once at start-up)::

    {"prices": [
      {"model": "agentwatch-builtin", "input_mtok": 0.1, "output_mtok": 0.4},
      {"provider": "openai", "model": "gpt-4o-mini", "input_mtok": 0.12,
       "output_mtok": 0.5, "cache_read_mtok": 0.06}
    ]}

USD per million tokens under genai-prices' own keys (``input_mtok``, ``output_mtok``,
``cache_read_mtok``, ``cache_write_mtok``); ``provider`` optional (any provider).

A price is looked up once per (provider, model) and kept: the hot path is a dict hit
and four multiplications. genai-prices decides the arithmetic: a flat price is probed
once through its own ``calc_price`` for what one token of each kind adds (input tokens
include cached ones, as the GenAI conventions say), and a tiered price (by prompt size)
is left to its ``calc_price`` at every call. A provider genai-prices does not know
(``agentwatch``, the builtin model's) is matched by the model name alone; a model it does
not know is unpriced (``None``): no cost is recorded, never 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from genai_prices import Usage
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelPrice, TieredPrices

from .errors import ConfigurationError

AGENTWATCH_PRICES_FILE: Final = "AGENTWATCH_PRICES_FILE"
PRICE_KEYS: Final = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
_ENTRY_KEYS: Final = frozenset({"provider", "model", *PRICE_KEYS})
_MAX_CACHED: Final = 4096  # (provider, model) pairs kept; past it, looked up each time
_MAX_FILE_BYTES: Final = 4 * 1024 * 1024
_PROBE: Final = 1_000_000
_MAX_USD_MTOK: Final = Decimal(1_000_000)  # USD per million tokens: above it, a typo


class Price:
    """What one call of a model costs, in USD, for its token counts."""

    __slots__ = ("_model_price",)

    def __init__(self, model_price: ModelPrice) -> None:
        self._model_price = model_price

    def cost(
        self, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0
    ) -> float:
        """``input_tokens`` includes the cached ones (``cache_read``, ``cache_write``)."""
        usage = Usage(
            input_tokens=max(input_tokens, cache_read + cache_write),
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )
        return float(self._model_price.calc_price(usage)["total_price"])


class FlatPrice(Price):
    """A price without tiers: linear in each kind of token, probed once."""

    __slots__ = ("_base", "_cache_read", "_cache_write", "_input", "_output")

    def __init__(self, model_price: ModelPrice) -> None:
        super().__init__(model_price)
        base = super().cost(0, 0)  # a price per request, if any
        self._base = base
        self._input = (super().cost(_PROBE, 0) - base) / _PROBE
        self._output = (super().cost(0, _PROBE) - base) / _PROBE
        # one cached token instead of one uncached input token
        self._cache_read = (super().cost(_PROBE, 0, cache_read=_PROBE) - base) / _PROBE
        self._cache_write = (super().cost(_PROBE, 0, cache_write=_PROBE) - base) / _PROBE

    def cost(
        self, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0
    ) -> float:
        uncached = max(input_tokens - cache_read - cache_write, 0)
        return (
            self._base
            + uncached * self._input
            + cache_read * self._cache_read
            + cache_write * self._cache_write
            + output_tokens * self._output
        )


def price_of(model_price: ModelPrice) -> Price:
    tiered = any(isinstance(value, TieredPrices) for value in vars(model_price).values())
    return Price(model_price) if tiered else FlatPrice(model_price)


@dataclass(frozen=True, slots=True)
class _UserPrice:
    provider: str  # "" = any provider
    model: str
    price: Price


class PriceTable:
    """Prices by (provider, model): the user's first, then the bundled snapshot's."""

    def __init__(self, user: tuple[_UserPrice, ...] = (), *, bundled: bool = True) -> None:
        self._user = {(p.provider, p.model): p.price for p in user}  # both normalised
        self._bundled = bundled
        self._cache: dict[tuple[str, str], Price | None] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | Path | None, *, bundled: bool = True) -> PriceTable:
        """The bundled table, with the user's file (``None`` or "": none) over it."""
        if path is None or str(path) == "":
            return cls(bundled=bundled)
        return cls(read_price_file(Path(path)), bundled=bundled)

    def preload(self) -> None:
        """Load the bundled table now (~16,000 objects; genai-prices loads it on the
        first lookup): before a process freezes start-up's heap (runtime/cli/heap.py),
        not after, where every full collection would walk it. A table that fails to load
        fails again at the first lookup, where a call's telemetry absorbs it: not here."""
        if self._bundled:
            with contextlib.suppress(Exception):
                get_snapshot()

    def price(self, provider: str, model: str) -> Price | None:
        """The price of a call of ``model`` at ``provider`` (None: unpriced)."""
        key = (provider, model)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._find(provider, model)
        with self._lock:
            if len(self._cache) < _MAX_CACHED:
                self._cache[key] = found
        return found

    def _find(self, provider: str, model: str) -> Price | None:
        if not model:
            return None
        lowered = _name(model)
        user = self._user.get((_name(provider), lowered)) or self._user.get(("", lowered))
        if user is not None:
            return user
        if not self._bundled:
            return None
        return _bundled_price(provider, model)


def _bundled_price(provider: str, model: str) -> Price | None:
    snapshot = get_snapshot()
    try:
        known = snapshot.find_provider(None, provider, None) if provider else None
    except LookupError:
        known = None  # a provider genai-prices does not list: match by the model alone
    try:
        _, info = snapshot.find_provider_model(model, known, None, None)
        return price_of(info.get_prices(datetime.now(tz=UTC)))
    except (LookupError, ValueError):
        return None


def read_price_file(path: Path) -> tuple[_UserPrice, ...]:
    """The user's prices, checked: a ``ConfigurationError`` naming the file and entry."""
    where = f"{AGENTWATCH_PRICES_FILE}={str(path)!r}"
    try:
        # non-blocking: a FIFO without a writer must not hang start-up
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ConfigurationError(f"{where}: not a regular file")
            raw = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > _MAX_FILE_BYTES:
        raise ConfigurationError(f"{where}: larger than {_MAX_FILE_BYTES} bytes")
    try:
        document = json.loads(raw, parse_float=Decimal, parse_int=Decimal)
    except (ValueError, RecursionError) as exc:
        raise ConfigurationError(f"{where}: not JSON ({exc})") from None
    entries = document.get("prices") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigurationError(
            f'{where}: expected {{"prices": [{{"model": ..., "input_mtok": ..., '
            f'"output_mtok": ...}}, ...]}}'
        )
    prices: dict[tuple[str, str], _UserPrice] = {}
    for number, entry in enumerate(entries):
        price = _entry(entry, f"{where}: prices[{number}]")
        key = (price.provider, price.model)
        if key in prices:
            raise ConfigurationError(
                f"{where}: prices[{number}] prices {price.model!r} "
                f"{'at ' + repr(price.provider) if price.provider else 'for any provider'} again"
            )
        prices[key] = price
    return tuple(prices.values())


def _entry(entry: Any, where: str) -> _UserPrice:
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where} must be an object")
    unknown = sorted(str(k) for k in entry if k not in _ENTRY_KEYS)
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown[:5]))}; use provider, "
            f"model, {', '.join(PRICE_KEYS)}"
        )
    model, provider = entry.get("model"), entry.get("provider", "")
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(f"{where}: 'model' must be a model name")
    if not isinstance(provider, str):
        raise ConfigurationError(f"{where}: 'provider' must be text")
    for required in ("input_mtok", "output_mtok"):
        if required not in entry:
            raise ConfigurationError(f"{where}: {required!r} (USD per million tokens) is missing")
    values = {key: _usd(entry[key], f"{where}.{key}") for key in PRICE_KEYS if key in entry}
    return _UserPrice(_name(provider), _name(model), price_of(ModelPrice(**values)))


def _name(name: str) -> str:
    """A provider's or model's name as matched: case and surrounding spaces ignored."""
    return name.strip().lower()


def _usd(value: Any, where: str) -> Decimal:
    if not isinstance(value, Decimal):
        raise ConfigurationError(f"{where} must be a number (USD per million tokens)")
    try:
        if value.is_finite() and 0 <= value <= _MAX_USD_MTOK:
            return value
    except InvalidOperation:
        pass
    shown = f"{value:.6g}" if value.is_finite() else str(value)
    raise ConfigurationError(
        f"{where} must be a number >= 0 and <= {_MAX_USD_MTOK} (USD per million tokens), "
        f"got {shown}"
    )
