"""``agentwatch top``'s model: scrapes, windows between them, the figures of a window.

Pages are rendered by prometheus_client from a real catalog (a fresh registry each), so
the parser reads exactly what a service exposes.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import threading
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from agentwatch.runtime.cli.top import command, keys, screen
from agentwatch.runtime.cli.top import scrape as scrape_module
from agentwatch.runtime.cli.top.figures import compute
from agentwatch.runtime.cli.top.monitor import ALL, Monitor
from agentwatch.runtime.cli.top.scrape import Snapshot, parse_page, scrape
from agentwatch.runtime.cli.top.window import between, combine
from agentwatch.telemetry import MetricCatalog
from agentwatch.telemetry import names as n
from tests.unit.test_vocabulary import second_spellings

TOP = Path(__file__).resolve().parents[2] / "runtime" / "cli" / "top"


def _catalog() -> MetricCatalog:
    return MetricCatalog.create(CollectorRegistry())


def _page(catalog: MetricCatalog, at: float, url: str = "http://a/metrics") -> Snapshot:
    return parse_page(url, generate_latest(catalog.registry).decode(), at)


def _runs(catalog: MetricCatalog, seconds: float, times: int = 1, error: str = "") -> None:
    child = catalog.gen_ai_invoke_agent_duration.labels("research", "m", error)
    for _ in range(times):
        child.observe(seconds)


def test_quantiles_come_from_the_bucket_increases_in_the_window() -> None:
    catalog = _catalog()
    _runs(catalog, 0.05, times=10)  # before the window: all in the first bucket
    first = _page(catalog, at=100.0)
    _runs(catalog, 0.15, times=5)  # (0.1, 0.2]
    _runs(catalog, 0.3, times=5)  # (0.2, 0.4]
    window = between(first, _page(catalog, at=102.0))
    runs = compute(window).runs
    assert (runs.count, runs.per_second, window.seconds) == (10, 5.0, 2.0)
    # histogram_quantile over the increases: rank 5 ends bucket 0.2; rank 9.5 in (0.2, 0.4]
    assert runs.p50_seconds == pytest.approx(0.2)
    assert runs.p95_seconds == pytest.approx(0.2 + 0.2 * 4.5 / 5)


def test_nothing_in_the_window_has_no_latency_and_no_error_ratio() -> None:
    catalog = _catalog()
    _runs(catalog, 0.05, times=3)
    runs = compute(between(_page(catalog, 0.0), _page(catalog, 1.0))).runs
    assert (runs.count, runs.p50_seconds, runs.p95_seconds, runs.error_ratio) == (
        0,
        None,
        None,
        None,
    )


def test_errors_by_type_and_cancelled_runs_are_told_apart() -> None:
    catalog = _catalog()
    first = _page(catalog, 0.0)
    _runs(catalog, 0.1, times=6)
    _runs(catalog, 0.1, times=3, error="TimeoutError")
    _runs(catalog, 0.1, times=1, error=n.CANCELLED)
    runs = compute(between(first, _page(catalog, 1.0))).runs
    assert (runs.count, runs.errors, runs.cancelled) == (10, 3, 1)
    assert runs.error_ratio_by_type == {"TimeoutError": pytest.approx(0.3)}


def test_a_restarted_target_counts_from_zero_not_below() -> None:
    before = _catalog()
    _runs(before, 0.1, times=50)
    before.retry_attempts.labels(n.OP_CHAT, n.RETRY_RETRY).inc(20)
    after = _catalog()  # a new process: every counter starts again
    _runs(after, 0.1, times=4)
    after.retry_attempts.labels(n.OP_CHAT, n.RETRY_RETRY).inc(2)
    window = between(_page(before, 0.0), _page(after, 2.0))
    found = compute(window)
    assert (found.runs.count, found.health.retries) == (4, 2)


def test_targets_are_summed_and_each_kept() -> None:
    a, b = _catalog(), _catalog()
    monitor = Monitor(["http://a/metrics", "http://b/metrics"])
    monitor.update([_page(a, 0.0, "http://a/metrics"), _page(b, 0.0, "http://b/metrics")])
    _runs(a, 0.1, times=3)
    _runs(b, 0.1, times=5)
    a.batch_queue_depth.set(4)
    b.batch_queue_depth.set(6)
    monitor.update([_page(a, 1.0, "http://a/metrics"), _page(b, 1.0, "http://b/metrics")])
    summed = monitor.figures[ALL]
    assert summed is not None
    assert (summed.runs.count, summed.batches.queue_depth) == (8, 10)
    each = [monitor.figures[url] for url in monitor.selections[1:]]
    assert [f.runs.count for f in each if f is not None] == [3, 5]


def test_a_target_gone_is_shown_and_its_window_resumes_when_it_is_back() -> None:
    catalog = _catalog()
    monitor = Monitor(["http://a/metrics"])
    monitor.update([_page(catalog, 0.0)])
    monitor.update([Snapshot("http://a/metrics", 1.0, error="no answer within 1 s")])
    [target] = monitor.as_json()["targets"]
    assert (target["up"], target["error"], target["failures_in_a_row"]) == (
        False, "no answer within 1 s", 1,
    )  # fmt: skip
    assert monitor.figures[ALL] is None
    _runs(catalog, 0.1, times=6)
    monitor.update([_page(catalog, 3.0)])
    back = monitor.figures[ALL]
    assert back is not None
    assert (back.seconds, back.runs.count) == (3.0, 6)  # from the last good scrape
    assert monitor.targets[0].up


def test_spend_is_zero_before_the_first_priced_call_and_read_after() -> None:
    catalog = _catalog()
    window = between(_page(catalog, 0.0), _page(catalog, 1.0))
    # the family is declared with no series yet: nothing spent, not "no cost metric"
    assert (compute(window).usage.usd, compute(window).usage.unpriced_calls) == (0, 0)

    first = _page(catalog, 0.0)
    catalog.cost.labels("p", "m", "research_agent").inc(0.5)  # issue 17's counter
    catalog.gen_ai_operation_duration.labels(n.OP_CHAT, "p", "m", "").observe(0.1)
    found = compute(between(first, _page(catalog, 2.0)))
    assert (found.usage.usd, found.usage.usd_per_second) == (0.5, 0.25)
    [model] = found.models
    assert (model.calls.name, model.usd_per_second) == ("m", 0.25)


def test_batch_progress_and_eta_at_the_windows_rate() -> None:
    catalog = _catalog()
    catalog.batch_tasks.labels(n.STATUS_COMPLETED).inc(10)
    first = _page(catalog, 0.0)
    catalog.batch_tasks.labels(n.STATUS_COMPLETED).inc(8)
    catalog.batch_tasks.labels(n.STATUS_FAILED).inc(2)
    catalog.batch_queue_depth.set(36)
    catalog.batch_in_progress.set(4)
    batches = compute(between(first, _page(catalog, 2.0))).batches
    assert (batches.finished_per_second, batches.eta_seconds) == (5.0, 8.0)  # 40 left at 5/s
    assert (batches.completed_total, batches.failed_total) == (18, 2)
    assert batches.progress == pytest.approx(20 / 60)


def test_several_windows_of_one_length_add_as_they_are() -> None:
    a = _catalog()
    first = _page(a, 0.0)
    _runs(a, 0.1, times=4)
    one = between(first, _page(a, 2.0))
    long = between(first, _page(a, 8.0))  # a target back after 3 missed ticks
    summed = combine([one, one])
    assert summed is not None
    assert compute(summed).runs.count == 8
    scaled = combine([one, long])
    assert scaled is not None
    assert compute(scaled).runs.count == 4 + 1  # the long window adds its rate over 2 s


async def _serve(handler: Callable[[web.Request], object]) -> TestServer:
    app = web.Application()
    app.router.add_get("/metrics", handler)  # type: ignore[arg-type]
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_a_scrape_is_timed_refused_or_read_and_says_which() -> None:
    catalog = _catalog()
    page = generate_latest(catalog.registry)
    seen: list[str] = []

    async def good(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer t0k":
            return web.Response(status=401)
        return web.Response(body=page, content_type="text/plain")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(body=page)

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(text="<html>hello</html> { not metrics")

    servers = [await _serve(h) for h in (good, slow, garbage)]
    try:
        async with aiohttp.ClientSession() as session:
            urls = [str(s.make_url("/metrics")) for s in servers]
            ok = await scrape(session, urls[0], time_limit=10, token="t0k")
            refused = await scrape(session, urls[0], time_limit=10)
            late = await scrape(session, urls[1], time_limit=0.2)
            wrong = await scrape(session, urls[2], time_limit=10)
            closed = await scrape(session, "http://127.0.0.1:9/metrics", time_limit=10)
    finally:
        for server in servers:
            await server.close()
    assert ok.ok
    assert ok.values
    assert seen == ["Bearer t0k", ""]
    assert refused.error is not None
    assert refused.error.startswith("401 unauthorized: set AGENTWATCH_METRICS_TOKEN")
    assert late.error == "no answer within 0.2 s"
    assert wrong.error == "not a Prometheus metrics page"
    assert closed.error


def test_keys_decode_arrows_and_letters() -> None:
    assert keys.decode("\x1b[Cm\tQ\x1b[D") == ["right", "m", "tab", "q", "left"]


def test_keys_switch_the_view_and_the_target_and_quit() -> None:
    monitor = Monitor(["http://a/metrics", "http://b/metrics"])
    redraws: list[None] = []
    controls = command._Controls(monitor, "operations", lambda: redraws.append(None))
    controls.on_key("m")
    controls.on_key("right")
    assert (controls.state.view, controls.state.selection) == ("models", "http://a/metrics")
    controls.on_key("left")
    controls.on_key("left")
    assert controls.state.selection == "http://b/metrics"  # wraps round
    assert not controls.quit.is_set()
    controls.on_key("q")
    assert controls.quit.is_set()
    assert len(redraws) == 5


@pytest.mark.parametrize("module", sorted(p.name for p in TOP.glob("*.py")))
def test_top_draws_its_names_from_telemetry(module: str) -> None:
    assert second_spellings(TOP / module) == []


def test_a_new_process_start_time_is_a_restart_even_when_counters_grew() -> None:
    tasks = f"# TYPE {n.M_BATCH_TASKS}_total counter\n"
    tasks += f'{n.M_BATCH_TASKS}_total{{{n.L_STATUS}="{n.STATUS_COMPLETED}"}}'
    before = parse_page("u", f"process_start_time_seconds 100\n{tasks} 5\n", 0.0)
    after = parse_page("u", f"process_start_time_seconds 200\n{tasks} 50\n", 1.0)
    window = between(before, after)
    assert window.restarted
    assert compute(window).batches.finished[n.STATUS_COMPLETED] == 50  # not 45


def test_an_error_type_seen_before_the_window_but_not_in_it_is_not_listed() -> None:
    catalog = _catalog()
    _runs(catalog, 0.1, times=2, error="TimeoutError")
    first = _page(catalog, 0.0)
    _runs(catalog, 0.1, times=3)
    runs = compute(between(first, _page(catalog, 1.0))).runs
    assert (runs.errors, runs.error_ratio_by_type) == (0, {})


def test_runs_in_flight_and_waiting_come_from_admission() -> None:
    catalog = _catalog()
    first = _page(catalog, 0.0)
    catalog.admission_limit.set(64)
    catalog.admission_in_flight.set(64)
    catalog.admission_waiting.set(12)
    runs = compute(between(first, _page(catalog, 1.0))).runs
    assert (runs.slots, runs.in_flight, runs.waiting) == (64, 64, 12)


def test_a_page_without_a_metric_shows_none_not_zero() -> None:
    old = parse_page("u", f"# TYPE {n.M_BATCH_QUEUE_DEPTH} gauge\n{n.M_BATCH_QUEUE_DEPTH} 3\n", 0)
    found = compute(between(old, old))
    assert (found.runs.in_flight, found.batches.queue_depth) == (None, 3)
    assert (found.health.loop_lag_max_seconds, found.usage.usd) == (None, None)


@pytest.mark.parametrize(("width", "rows_of_panels"), [(100, 2), (160, 1)])
def test_the_panels_stand_in_one_row_only_on_a_wide_terminal(
    width: int, rows_of_panels: int
) -> None:
    catalog = _catalog()
    monitor = Monitor(["http://a/metrics"])
    monitor.update([_page(catalog, 0.0)])
    _runs(catalog, 0.1, times=3)
    monitor.update([_page(catalog, 1.0)])
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(screen.frame(monitor, screen.ViewState(view="tools")))
    lines = console.export_text().splitlines()
    row_of = {
        title: next(i for i, line in enumerate(lines) if f" {title} " in line)
        for title in ("Runs", "Batches")
    }
    assert (row_of["Batches"] == row_of["Runs"]) == (rows_of_panels == 1)
    assert any(line.startswith("Tools") for line in lines)


def test_a_sparkline_scales_to_its_largest_value_and_keeps_the_last_points() -> None:
    assert screen.sparkline([0, 1, 2, 4]) == "▁▃▅█"
    assert screen.sparkline([0, 0]) == "▁▁"
    assert screen.sparkline(range(100), width=3) == "███"


def test_top_refuses_what_it_cannot_watch(capsys: pytest.CaptureFixture[str]) -> None:
    from agentwatch.runtime.cli.main import main

    assert main(["top", "--url", "ftp://example/metrics", "--once"]) == 2
    assert "--url must be an http(s) URL, got 'ftp://example/metrics'" in capsys.readouterr().err
    assert main(["top", "--url", "http://127.0.0.1:9/metrics"]) == 2  # stdout: not a terminal
    assert "the live view needs a terminal; use --once or --json" in capsys.readouterr().err
    assert main(["top", "--url", "http://127.0.0.1:9/metrics", "--json", "--timeout", "1"]) == 2
    assert "cannot read http://127.0.0.1:9/metrics: cannot connect" in capsys.readouterr().err


def test_json_names_each_target_when_there_are_several() -> None:
    a, b = _catalog(), _catalog()
    monitor = Monitor(["http://a/metrics", "http://b/metrics"])
    monitor.update([_page(a, 0.0), _page(b, 0.0)])
    _runs(a, 0.1, times=2)
    monitor.update([_page(a, 1.0), Snapshot("http://b/metrics", 1.0, error="HTTP 503")])
    out = monitor.as_json()
    assert [t["up"] for t in out["targets"]] == [True, False]
    assert out["figures"]["runs"]["count"] == 2
    assert out["by_target"]["http://a/metrics"]["runs"]["count"] == 2
    assert out["by_target"]["http://b/metrics"] is None


def _frame_text(monitor: Monitor, view: str = "operations", selection: str = ALL) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(screen.frame(monitor, screen.ViewState(view=view, selection=selection)))
    return console.export_text()


def _watched(*pages: str) -> Monitor:
    monitor = Monitor(["u"])
    for at, text in enumerate(pages):
        monitor.update([parse_page("u", text, float(at))])
    return monitor


@pytest.mark.parametrize("view", ["operations", "models"])
def test_label_values_are_shown_as_they_are_never_read_as_markup(view: str) -> None:
    catalog = _catalog()
    calls = catalog.gen_ai_operation_duration
    labels = dict.fromkeys(calls._labelnames, "")
    first = _page(catalog, 0.0)
    for model in ("m[/x]", "mistral[large]"):
        calls.labels(**{**labels, n.L_GEN_AI_REQUEST_MODEL: model}).observe(0.1)
    _runs(catalog, 0.1, error="Err[bold]")
    monitor = Monitor(["http://a/metrics"])
    monitor.update([first])
    monitor.update([_page(catalog, 1.0)])
    text = _frame_text(monitor, view)
    assert "m[/x]" in text
    assert "mistral[large]" in text
    if view == "operations":
        assert "Err[bold] 1" in text


def test_figures_that_are_not_finite_show_a_dash_and_the_view_goes_on() -> None:
    counter = f"# TYPE {n.M_RETRY_ATTEMPTS}_total counter\n{n.M_RETRY_ATTEMPTS}_total"
    lag = f"# TYPE {n.M_EVENT_LOOP_LAG_MAX} gauge\n{n.M_EVENT_LOOP_LAG_MAX}"
    runs = n.M_GEN_AI_INVOKE_AGENT_DURATION
    hist = f"# TYPE {runs} histogram\n{runs}_count"

    def page(retries: str, lag_max: str, count: str) -> str:
        return f"{counter} {retries}\n{lag} {lag_max}\n{hist} {count}\n"

    monitor = _watched(
        page("1", "NaN", "1"), page("+Inf", "+Inf", "+Inf"), page("NaN", "-Inf", "NaN")
    )
    text = _frame_text(monitor)
    assert "loop lag max  -" in " ".join(text.split("│"))
    assert "nan" not in text.lower()
    assert "inf" not in text.replace("in flight", "").replace("invoke", "").lower()
    assert screen.sparkline([float("nan"), 1.0, float("inf")]) == "▁█▁"
    out = json.dumps(monitor.as_json(), allow_nan=False)  # null, never NaN
    assert json.loads(out)["figures"]["health"]["loop_lag_max_seconds"] is None


def test_a_series_that_went_down_is_reset_alone_and_one_gone_adds_nothing() -> None:
    # a merged page of serve --workers 2: worker 2 died, its counts left some series
    name = f"{n.M_BATCH_TASKS}_total"
    head = f"process_start_time_seconds 100\n# TYPE {name} counter\n"
    done, failed = (
        f'{name}{{{n.L_STATUS}="{n.STATUS_COMPLETED}"',
        f'{n.L_STATUS}="{n.STATUS_FAILED}"',
    )
    before = parse_page(
        "u", f'{head}{done},w="1"}} 100\n{done},w="2"}} 40\n{name}{{{failed}}} 7\n', 0.0
    )
    after = parse_page("u", f'{head}{done},w="1"}} 30\n{done},w="2"}} 45\n', 1.0)
    window = between(before, after)
    assert not window.restarted
    found = compute(window).batches
    # w=1 went down: reset, its increase is its value; w=2 grew by 5; the failed series left
    assert found.finished[n.STATUS_COMPLETED] == 35
    assert found.finished[n.STATUS_FAILED] == 0
    restart = head.replace("100", "150")
    again = parse_page("u", f'{restart}{done},w="1"}} 31\n', 2.0)
    assert between(after, again).restarted  # the earliest start time on the page changed


async def test_a_page_that_takes_too_long_to_parse_is_late_and_the_others_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalog = _catalog()
    page = generate_latest(catalog.registry)
    release = threading.Event()
    parse = scrape_module.parse_page

    def slow_parse(url: str, text: str, at: float) -> Snapshot:
        if url.endswith("/slow"):
            release.wait(30)  # bounded; set as soon as the scrape gave up on it
        return parse(url, text, at)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/plain")

    monkeypatch.setattr(scrape_module, "parse_page", slow_parse)
    app = web.Application()
    app.router.add_get("/metrics", handler)
    app.router.add_get("/slow", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            urls = [str(server.make_url(p)) for p in ("/slow", "/metrics")]
            slow, quick = await scrape_module.scrape_all(session, urls, time_limit=1, token=None)
            again = await scrape(session, urls[0], time_limit=1)  # no second parse piled up
    finally:
        release.set()
        await server.close()
    assert slow.error == "page not parsed within 1 s"
    assert again.error == "its last page is still being parsed"
    assert quick.ok


async def test_a_refused_token_is_said_to_be_refused() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=401)

    server = await _serve(handler)
    try:
        async with aiohttp.ClientSession() as session:
            url = str(server.make_url("/metrics"))
            wrong = await scrape(session, url, time_limit=10, token="nope")
    finally:
        await server.close()
    assert wrong.error == (
        "401 unauthorized: the service refused the token in AGENTWATCH_METRICS_TOKEN"
    )


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--url", "http://"], "--url 'http://' names no host"),
        (["--url", "http://[::1"], "--url 'http://[::1' is not a valid URL"),
        (["--url", "http://127.0.0.1:99999/metrics"], "is not a valid URL: Port out of range"),
        (["--interval", "86400"], "--interval is at most 3600 s, got 86400"),
    ],
)
def test_top_refuses_a_url_or_interval_it_cannot_use_in_one_line(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentwatch.runtime.cli.main import main

    assert main(["top", *argv, "--once"]) == 2
    err = capsys.readouterr().err
    assert said in err
    assert err.count("\n") == 1


def test_the_default_timeout_is_the_interval_within_bounds() -> None:
    def timeout(interval: float, given: float | None = None) -> float:
        return command._timeout(argparse.Namespace(interval=interval, timeout=given))

    assert (timeout(0.05), timeout(2.0), timeout(60.0), timeout(0.05, 0.1)) == (0.5, 2.0, 5.0, 0.1)


def test_a_single_target_that_went_down_is_shown_down_not_waiting() -> None:
    catalog = _catalog()
    monitor = Monitor(["http://a/metrics"])
    monitor.update([_page(catalog, 0.0)])
    monitor.update([_page(catalog, 1.0)])
    monitor.update([Snapshot("http://a/metrics", 2.0, error="cannot connect: refused")])
    text = _frame_text(monitor)
    assert "DOWN" in text
    assert "waiting for two scrapes" not in text


def test_unpriced_calls_are_no_spend_of_zero() -> None:
    catalog = _catalog()
    first = _page(catalog, 0.0)
    catalog.unpriced_calls.labels("openai", "m").inc(3)
    calls = catalog.gen_ai_operation_duration
    calls.labels(**{**dict.fromkeys(calls._labelnames, ""), n.L_GEN_AI_REQUEST_MODEL: "m"}).observe(
        1
    )
    monitor = Monitor(["http://a/metrics"])
    monitor.update([first])
    monitor.update([_page(catalog, 1.0)])
    usage = monitor.as_json()["figures"]["usage"]
    assert (usage["usd"], type(usage["usd"]), usage["unpriced_calls"]) == (0.0, float, 3.0)
    lines = [" ".join(line.split()) for line in _frame_text(monitor).splitlines()]
    assert any("spend - (3 unpriced)" in line for line in lines)
    assert not any("spend $0.000000 " in line for line in lines)
    [model] = monitor.as_json()["figures"]["models"]
    assert model["usd_per_second"] is None  # not $0/s
    assert "$0.000000" not in _frame_text(monitor, "models")
