"""``agentwatch top [--url URL ...] [--interval S] [--once | --json]``.

Live: a full-screen view redrawn after every scrape and every key; scrapes run in their
own task, so a slow target never delays a key. ``--once``: two scrapes ``--interval``
apart, one frame printed as text; ``--json``: the same figures as JSON. The metrics
token comes from ``AGENTWATCH_METRICS_TOKEN`` (sent as a bearer token).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Final
from urllib.parse import urlsplit

import aiohttp
from rich.console import Console
from rich.live import Live

from ...settings import AGENTWATCH_METRICS_TOKEN
from ..exits import EXIT_OK, EXIT_USAGE
from .keys import read_keys
from .monitor import ALL, Monitor
from .scrape import scrape_all
from .screen import VIEWS, ViewState, frame, screen

MAX_SCRAPE_TIMEOUT: Final = 5.0  # the default per-scrape timeout: the interval, at most this
MIN_SCRAPE_TIMEOUT: Final = 0.5  # ... and at least this (a short interval, a slow page)
MAX_INTERVAL: Final = 3600.0  # an hour between scrapes: longer is a mistake
_VIEW_KEYS: Final = {view[0]: view for view in VIEWS}  # o, t, m, b
_QUIT_KEYS: Final = frozenset({"q"})
TOP_EPILOG: Final = f"""\
keys: {", ".join(f"{k} {v}" for k, v in _VIEW_KEYS.items())}; tab or right/left arrow
  the next/previous target (all targets summed first); q quit.

figures come from what changed between two scrapes: rates, p50/p95 interpolated in the
histogram buckets as PromQL's histogram_quantile; a series that went down was reset and
counts from zero, as does every series of a target that restarted; one that is not read
and parsed within --timeout is shown DOWN and tried again at the next tick.
{AGENTWATCH_METRICS_TOKEN}, when set, is sent as the bearer token of every scrape.
"""


def _timeout(args: argparse.Namespace) -> float:
    if args.timeout:
        return float(args.timeout)
    return max(MIN_SCRAPE_TIMEOUT, min(float(args.interval), MAX_SCRAPE_TIMEOUT))


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be scraped (None: it can be tried)."""
    if not url.startswith(("http://", "https://")):
        return f"--url must be an http(s) URL, got {url!r}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port out of range or not a number)
    except ValueError as exc:
        return f"--url {url!r} is not a valid URL: {exc}"
    if not parts.hostname:
        return f"--url {url!r} names no host"
    return None


def _token() -> str | None:
    return os.environ.get(AGENTWATCH_METRICS_TOKEN, "").strip() or None


def top_command(args: argparse.Namespace) -> int:
    urls = list(dict.fromkeys(args.url or [args.default_url]))  # each target once
    problems = [p for p in map(_url_problem, urls) if p is not None]
    if args.interval > MAX_INTERVAL:
        problems.append(f"--interval is at most {MAX_INTERVAL:g} s, got {args.interval:g}")
    if problems:
        print(f"agentwatch top: {problems[0]}", file=sys.stderr)
        return EXIT_USAGE
    if args.once or args.json:
        return asyncio.run(_once(urls, args))
    if not sys.stdout.isatty():
        print(
            "agentwatch top: the live view needs a terminal; use --once or --json", file=sys.stderr
        )
        return EXIT_USAGE
    return asyncio.run(_live(urls, args))


def _session() -> aiohttp.ClientSession:
    # each scrape has its own deadline (asyncio.timeout); no proxy from the environment
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))


async def _once(urls: list[str], args: argparse.Namespace) -> int:
    monitor = Monitor(urls)
    timeout, token = _timeout(args), _token()
    async with _session() as session:
        monitor.update(await scrape_all(session, urls, time_limit=timeout, token=token))
        if not any(t.up for t in monitor.targets):
            return _none_answered(monitor)
        print(
            f"agentwatch top: first scrape done; measuring for {args.interval:g} s",
            file=sys.stderr,
            flush=True,
        )
        await asyncio.sleep(args.interval)
        monitor.update(await scrape_all(session, urls, time_limit=timeout, token=token))
    if monitor.figures[ALL] is None:
        return _none_answered(monitor)
    if args.json:
        print(json.dumps(monitor.as_json(), indent=2))
    else:
        console = Console(width=max(Console().width, 120), highlight=False)
        console.print(frame(monitor, ViewState(view=args.view)))
    return EXIT_OK


def _none_answered(monitor: Monitor) -> int:
    for target in monitor.targets:
        if target.error is not None:
            print(f"agentwatch top: cannot read {target.url}: {target.error}", file=sys.stderr)
    return EXIT_USAGE


class _Controls:
    """What the keys change: the view, the target shown, whether to quit."""

    def __init__(self, monitor: Monitor, view: str, redraw: Callable[[], None]) -> None:
        self.monitor = monitor
        self.state = ViewState(view=view)
        self.quit = asyncio.Event()
        self._redraw = redraw

    def on_key(self, key: str) -> None:
        if key in _QUIT_KEYS:
            self.quit.set()
        elif key in _VIEW_KEYS:
            self.state = replace(self.state, view=_VIEW_KEYS[key])
        elif key in ("tab", "right", "backtab", "left"):
            self._step(-1 if key in ("backtab", "left") else 1)
        self._redraw()

    def _step(self, by: int) -> None:
        choices = self.monitor.selections
        index = choices.index(self.state.selection) if self.state.selection in choices else 0
        self.state = replace(self.state, selection=choices[(index + by) % len(choices)])


async def _live(urls: list[str], args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    monitor = Monitor(urls)
    changed = asyncio.Event()
    controls = _Controls(monitor, args.view, changed.set)
    timeout, token = _timeout(args), _token()

    async def scrape_forever(session: aiohttp.ClientSession) -> None:
        while True:  # until the view quits (cancelled); one tick per interval
            started = loop.time()
            monitor.update(await scrape_all(session, urls, time_limit=timeout, token=token))
            changed.set()
            await asyncio.sleep(max(0.0, started + args.interval - loop.time()))

    console = Console()
    loop.add_signal_handler(signal.SIGWINCH, changed.set)  # a resized terminal: redraw
    with (
        Live(
            screen(monitor, controls.state), console=console, screen=True, auto_refresh=False
        ) as live,
        read_keys(loop, controls.on_key),
    ):
        async with _session() as session:
            ticker = asyncio.create_task(scrape_forever(session))
            try:
                while not controls.quit.is_set():  # until q (Ctrl-C: KeyboardInterrupt)
                    await changed.wait()
                    changed.clear()
                    live.update(screen(monitor, controls.state), refresh=True)
            finally:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
                loop.remove_signal_handler(signal.SIGWINCH)
    return EXIT_OK
