"""Drawing one frame of ``agentwatch top`` with rich: the header, four panels (runs,
usage, batches, health) with sparklines, and the table of the chosen view.

The same renderables serve the live screen (inside a full-screen ``Layout``) and
``--once`` (printed once, as plain text when stdout is not a terminal).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.layout import Layout
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .figures import Figures, ModelRow, Row
from .monitor import ALL, History, Monitor

VIEWS: Final = ("operations", "tools", "models", "batches")
KEYS: Final = "o operations  t tools  m models  b batches  tab/←→ target  q quit"
_BARS: Final = "▁▂▃▄▅▆▇█"
SPARK_WIDTH: Final = 30
WIDE: Final = 150  # columns from which the four panels stand in one row


@dataclass(frozen=True, slots=True)
class ViewState:
    view: str = VIEWS[0]
    selection: str = ALL


def sparkline(values: Iterable[float], width: int = SPARK_WIDTH) -> str:
    """The last ``width`` values as bars, scaled to their maximum (flat when all 0);
    a value that is not a finite number draws as 0."""
    points = [v if math.isfinite(v) else 0.0 for v in list(values)[-width:]]
    top = max(points, default=0.0)
    if top <= 0:
        return _BARS[0] * len(points)
    last = len(_BARS) - 1
    return "".join(_BARS[min(last, round(v / top * last))] for v in points)


class _Spark:
    """A sparkline as wide as the room it is given (up to the history kept)."""

    def __init__(self, values: Iterable[float]) -> None:
        self.values = list(values)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(sparkline(self.values, max(1, options.max_width)), no_wrap=True)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(1, max(1, min(len(self.values), options.max_width)))


def _finite(value: float | None) -> float | None:
    """A figure that can be written as a number (None, NaN and ±Inf: None, shown "-")."""
    return value if value is not None and math.isfinite(value) else None


def duration(seconds: float | None) -> str:
    if (seconds := _finite(seconds)) is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.2f}s"


def rate(value: float | None, unit: str = "/s") -> str:
    return "-" if (value := _finite(value)) is None else f"{value:.2f}{unit}"


def ratio(value: float | None) -> str:
    return "-" if (value := _finite(value)) is None else f"{value * 100:.1f}%"


def count(value: float | None) -> str:
    return "-" if (value := _finite(value)) is None else f"{value:.0f}"


def money(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return "-" if (value := _finite(value)) is None else f"${value:.6f}{unit}"


def spend(usd: float | None, unpriced_calls: float | None, unit: str = "") -> str:
    """What was spent; calls with no price are said, never counted as $0."""
    unpriced = _finite(unpriced_calls) or 0.0
    if not unpriced:
        return money(usd, unit)
    priced = f"{money(usd, unit)} + " if usd else ""
    return f"{priced}- ({count(unpriced)} unpriced)"


def eta(seconds: float | None) -> str:
    if (seconds := _finite(seconds)) is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _pairs(rows: Sequence[tuple[str, RenderableType]]) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="ellipsis")
    for label, value in rows:
        grid.add_row(label, _cell(value))
    return grid


def _cell(value: RenderableType) -> RenderableType:
    """A string as plain text: label values (a model, a tool, an error type) may hold
    ``[``, which rich would read as markup."""
    return Text(value) if isinstance(value, str) else value


def _cells(*values: str) -> list[Text]:
    return [Text(v) for v in values]


def _runs_panel(f: Figures, history: History) -> Panel:
    r = f.runs
    types = ", ".join(f"{k} {ratio(v)}" for k, v in r.error_ratio_by_type.items()) or "none"
    return Panel(
        _pairs(
            [
                ("runs/s", rate(r.per_second)),
                ("", _Spark(history.runs_per_second)),
                ("p50 / p95", f"{duration(r.p50_seconds)} / {duration(r.p95_seconds)}"),
                ("", _Spark(history.p95_seconds)),
                ("errors", f"{count(r.errors)}  {ratio(r.error_ratio)}"),
                ("", _Spark(history.errors_per_second)),
                ("by type", types),
                ("in flight/waiting", f"{count(r.in_flight)} / {count(r.waiting)}"),
                ("slots, wait p95", f"{_slots(r.slots)}, {duration(r.slot_wait_p95_seconds)}"),
                ("runs", f"{count(r.count)} in window"),
                ("cancelled/shed", f"{count(r.cancelled)} / {count(r.shed)}"),
            ]
        ),
        title="Runs",
    )


def _slots(limit: float | None) -> str:
    return "no limit" if limit == 0 else count(limit)  # admission's gauge: 0 = no limit


def _usage_panel(f: Figures) -> Panel:
    u = f.usage
    return Panel(
        _pairs(
            [
                ("tokens/s", rate(u.tokens_per_second)),
                ("tokens in", count(u.input_tokens)),
                ("tokens out", count(u.output_tokens)),
                ("spend/s", spend(u.usd_per_second, u.unpriced_calls, "/s")),
                ("spend", spend(u.usd, u.unpriced_calls)),
                ("run p50/p95", f"{money(u.run_cost_p50_usd)} / {money(u.run_cost_p95_usd)}"),
                ("unpriced calls", "n/a" if u.unpriced_calls is None else count(u.unpriced_calls)),
            ]
        ),
        title="Tokens & spend",
    )


def _batches_panel(f: Figures) -> Panel:
    b = f.batches
    return Panel(
        _pairs(
            [
                ("queued", count(b.queue_depth)),
                ("in progress", count(b.in_progress)),
                ("done / failed", f"{count(b.completed_total)} / {count(b.failed_total)}"),
                ("progress", ratio(b.progress)),
                ("tasks/s", rate(b.finished_per_second)),
                ("ETA", eta(b.eta_seconds) if b.queue_depth or b.in_progress else "-"),
            ]
        ),
        title="Batches",
    )


def _health_panel(f: Figures) -> Panel:
    h = f.health
    return Panel(
        _pairs(
            [
                ("retries", count(h.retries)),
                ("give-ups", count(h.giveups)),
                ("spans dropped", count(h.spans_dropped)),
                ("loop lag p95", duration(h.loop_lag_p95_seconds)),
                ("loop lag max", duration(h.loop_lag_max_seconds)),
            ]
        ),
        title="Health",
    )


def _row_table(title: str, rows: Sequence[Row]) -> Table:
    table = Table(title=title, expand=True, title_justify="left")
    for header in ("name", "calls", "/s", "errors", "error %", "p50", "p95", "error types"):
        table.add_column(header, justify="left" if header in ("name", "error types") else "right")
    for row in rows:
        table.add_row(
            *_cells(
                row.name,
                count(row.calls),
                rate(row.per_second, ""),
                count(row.errors),
                ratio(row.error_ratio),
                duration(row.p50_seconds),
                duration(row.p95_seconds),
                ", ".join(f"{k} {count(v)}" for k, v in row.error_types.items()),
            )
        )
    if not rows:
        table.add_row("(nothing in this window)", *[""] * 7)
    return table


def _model_table(rows: Sequence[ModelRow]) -> Table:
    table = Table(title="Models", expand=True, title_justify="left")
    headers = ("model", "calls/s", "errors", "p50", "p95", "first chunk p95", "in tok/s")
    for header in (*headers, "out tok/s", "spend/s"):
        table.add_column(header, justify="left" if header == "model" else "right")
    for m in rows:
        table.add_row(
            *_cells(
                m.calls.name,
                rate(m.calls.per_second, ""),
                count(m.calls.errors),
                duration(m.calls.p50_seconds),
                duration(m.calls.p95_seconds),
                duration(m.first_chunk_p95_seconds),
                rate(m.input_tokens_per_second, ""),
                rate(m.output_tokens_per_second, ""),
                money(m.usd_per_second),
            )
        )
    if not rows:
        table.add_row("(nothing in this window)", *[""] * 8)
    return table


def _view_table(view: str, f: Figures) -> RenderableType:
    if view == "tools":
        return _row_table("Tools", f.tools)
    if view == "models":
        return _model_table(f.models)
    if view == "batches":
        b = f.batches
        statuses = ", ".join(f"{k} {count(v)}" for k, v in b.finished.items())
        wait = f"task p95 {duration(b.task_p95_seconds)}  "
        wait += f"queue wait p95 {duration(b.queue_wait_p95_seconds)}"
        return Group(
            _row_table("Batch tasks by status", f.batch_statuses),
            Text(f"finished in window: {statuses}   {wait}"),
        )
    return _row_table("Operations", f.operations)


def _header(monitor: Monitor, state: ViewState, figures: Figures | None) -> Text:
    text = Text()
    text.append("agentwatch top", style="bold")
    shown = "all targets summed" if state.selection == ALL else state.selection
    text.append(f"  {shown}  view: {state.view}")
    if figures is not None:
        text.append(f"  window {figures.seconds:.1f} s")
        if figures.restarted:
            text.append("  (a target restarted: its counters count from zero)", style="yellow")
    for target in monitor.targets:
        text.append("\n")
        if target.up:
            text.append("● ", style="green")
            text.append(f"{target.url} up")
        elif target.scrapes == 0:
            text.append(f"○ {target.url} waiting for the first scrape")
        else:
            text.append("✗ ", style="red")
            text.append(f"{target.url} DOWN: {target.error} (retrying; {target.failures} in a row)")
    return text


class _Panels:
    """The four panels side by side, or two by two on a terminal narrower than
    ``WIDE`` columns (where four would wrap every figure)."""

    def __init__(self, runs: Panel, usage: Panel, batches: Panel, health: Panel) -> None:
        self.panels = (runs, usage, batches, health)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        wide = options.max_width >= WIDE
        grid = Table.grid(expand=True)
        for share in (1, 1, 1, 1) if wide else (1, 1):
            grid.add_column(ratio=share)
        if wide:
            grid.add_row(*self.panels)
        else:
            grid.add_row(*self.panels[:2])
            grid.add_row(*self.panels[2:])
        yield grid


def _no_figures(monitor: Monitor, state: ViewState) -> str:
    chosen = [t for t in monitor.targets if state.selection in (ALL, t.url)]
    if chosen and all(t.scrapes and not t.up for t in chosen):
        return "\nno figures: DOWN (retrying every tick)"
    return "\nwaiting for two scrapes of this target..."


def frame(monitor: Monitor, state: ViewState) -> Group:
    """One frame: header, panels, the view's table (or why there are no figures yet)."""
    figures = monitor.figures.get(state.selection)
    header = _header(monitor, state, figures)
    if figures is None:
        return Group(header, Text(_no_figures(monitor, state)))
    panels = _Panels(
        _runs_panel(figures, monitor.history[state.selection]),
        _usage_panel(figures),
        _batches_panel(figures),
        _health_panel(figures),
    )
    return Group(header, panels, _view_table(state.view, figures))


def screen(monitor: Monitor, state: ViewState) -> Layout:
    """The full-screen layout: the frame, and the keys at the bottom."""
    layout = Layout()
    layout.split_column(Layout(frame(monitor, state), name="frame"), Layout(name="keys", size=1))
    layout["keys"].update(Text(KEYS, style="reverse"))
    return layout
