"""Cost: prices from the bundled table and the user's file, on spans, metrics and totals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

from agentwatch.runtime.cli.main import main
from agentwatch.telemetry import (
    ConfigurationError,
    PriceTable,
    Telemetry,
    TelemetrySettings,
    format_report,
    prices,
    start_metrics_server,
    stats_from_registry,
    stats_from_text,
)
from agentwatch.telemetry import names as n
from agentwatch.telemetry.setup import build_telemetry

M = 1_000_000
COST = f"{n.M_COST}_total"
UNPRICED = f"{n.M_UNPRICED_CALLS}_total"


def value(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float | None:
    return registry.get_sample_value(name, labels)


# -- the price table ------------------------------------------------------------------
def test_gpt_4o_mini_is_priced_from_the_bundled_table() -> None:
    price = PriceTable().price("openai", "gpt-4o-mini")
    assert price is not None
    assert price.cost(M, 0) == pytest.approx(0.15)
    assert price.cost(0, M) == pytest.approx(0.60)
    assert price.cost(1000, 200) == pytest.approx(1000 * 0.15 / M + 200 * 0.60 / M)


def test_cached_input_tokens_are_priced_at_the_cache_price() -> None:
    price = PriceTable().price("openai", "gpt-4o-mini")
    assert price is not None
    # input tokens include the cached ones: 600 uncached at $0.15/M, 400 at $0.075/M
    assert price.cost(1000, 0, cache_read=400) == pytest.approx(600 * 0.15 / M + 400 * 0.075 / M)


def test_a_provider_the_table_does_not_know_is_matched_by_the_model() -> None:
    table = PriceTable()
    # the builtin model's provider, answering as gpt-4o-mini (AGENTWATCH_MODEL)
    assert table.price("agentwatch", "gpt-4o-mini") is not None
    assert table.price("agentwatch", "agentwatch-builtin") is None
    assert table.price("openai", "no-such-model-xyz") is None
    assert table.price("openai", "") is None


def test_a_tiered_price_is_left_to_genai_prices() -> None:
    price = PriceTable().price("anthropic", "claude-sonnet-4-5")
    assert price is not None
    small, large = price.cost(1000, 0), price.cost(300_000, 0)
    assert large > 300 * small  # past 200k prompt tokens the per-token price goes up


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(document))
    return path


def test_the_users_prices_win_over_the_bundled_table(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "prices": [
                {"model": "agentwatch-builtin", "input_mtok": 1, "output_mtok": 2},
                {
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "input_mtok": 0.1,
                    "output_mtok": 0.5,
                },
            ]
        },
    )
    table = PriceTable.from_file(path)
    builtin = table.price("agentwatch", "agentwatch-builtin")
    assert builtin is not None
    assert builtin.cost(M, M) == pytest.approx(3.0)
    mini = table.price("openai", "gpt-4o-mini")
    assert mini is not None
    assert mini.cost(M, 0) == pytest.approx(0.1)
    other = table.price("agentwatch", "gpt-4o-mini")  # another provider: the bundled price
    assert other is not None
    assert other.cost(M, 0) == pytest.approx(0.15)


@pytest.mark.parametrize(
    ("document", "says"),
    [
        (
            {"prices": [{"model": "m", "input_mtok": 1}]},
            "'output_mtok' (USD per million tokens) is missing",
        ),
        ({"prices": [{"model": "m", "input_mtok": -1, "output_mtok": 1}]}, "must be a number >= 0"),
        ({"prices": [{"model": "m", "input_mtok": "1", "output_mtok": 1}]}, "must be a number"),
        ({"prices": [{"model": "m", "input": 1, "output_mtok": 1}]}, "unknown key(s) 'input'"),
        ({"prices": [{"input_mtok": 1, "output_mtok": 1}]}, "'model' must be a model name"),
        ({"models": []}, 'expected {"prices"'),
        (
            {"prices": [{"model": "m", "input_mtok": 1, "output_mtok": 1}] * 2},
            "prices[1] prices 'm' for any provider again",
        ),
    ],
)
def test_a_bad_price_file_is_refused_at_start_up(
    tmp_path: Path, document: object, says: str
) -> None:
    path = write(tmp_path, document)
    with pytest.raises(ConfigurationError) as raised:
        build_telemetry(TelemetrySettings.from_env({"AGENTWATCH_PRICES_FILE": str(path)}))
    assert "AGENTWATCH_PRICES_FILE=" in str(raised.value)
    assert says in str(raised.value)


def test_a_missing_or_broken_price_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read it"):
        PriceTable.from_file(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigurationError, match="not JSON"):
        PriceTable.from_file(broken)


# -- recorded: spans, metrics, totals ----------------------------------------------------
def test_a_priced_call_puts_its_cost_on_its_span_and_counter_with_an_exemplar(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    with telemetry.llm_call("gpt-4o-mini", "openai") as call:
        call.set_response(
            response_model="gpt-4o-mini-2024-07-18", input_tokens=1000, output_tokens=200
        )
    expected = 1000 * 0.15 / M + 200 * 0.60 / M
    assert call.cost_usd == pytest.approx(expected)
    (span,) = exporter.get_finished_spans()
    attrs = span.attributes or {}
    assert attrs[n.AGENTWATCH_USAGE_COST_AMOUNT] == pytest.approx(expected)
    assert attrs[n.AGENTWATCH_USAGE_COST_CURRENCY] == "USD"
    labels = {
        n.L_GEN_AI_PROVIDER_NAME: "openai",
        n.L_GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        n.L_GEN_AI_AGENT_NAME: "",
    }
    assert value(registry, COST, labels) == pytest.approx(expected)
    (sample,) = [
        s for m in registry.collect() if m.name == n.M_COST for s in m.samples if s.name == COST
    ]
    assert sample.exemplar is not None
    assert sample.exemplar.labels["trace_id"] == format(span.context.trace_id, "032x")


def test_token_detail_goes_on_the_span_as_the_conventions_name_it(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    with telemetry.llm_call("gpt-4o-mini", "openai") as call:
        call.set_response(
            input_tokens=1000,
            output_tokens=300,
            cache_read_tokens=400,
            cache_write_tokens=100,
            reasoning_tokens=250,
        )
    attrs = exporter.get_finished_spans()[0].attributes or {}
    assert attrs[n.GEN_AI_USAGE_INPUT_TOKENS] == 1000  # cached ones included
    assert attrs[n.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 400
    assert attrs[n.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 100
    assert attrs[n.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 250


def test_an_unknown_model_records_no_cost_and_counts_as_unpriced(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    run = telemetry.agent_run("helper", "my-own-llm")
    with run, telemetry.llm_call("my-own-llm", "vllm") as call:
        call.set_response(input_tokens=10, output_tokens=5)
    assert call.cost_usd is None
    assert run.spend.total_usd is None  # never 0
    spans = {s.name: s.attributes or {} for s in exporter.get_finished_spans()}
    assert n.AGENTWATCH_USAGE_COST_AMOUNT not in spans["chat my-own-llm"]
    assert spans["chat my-own-llm"][n.AGENTWATCH_USAGE_COST_UNPRICED] is True
    assert n.AGENTWATCH_RUN_COST_AMOUNT not in spans["invoke_agent helper"]
    unpriced = {n.L_GEN_AI_PROVIDER_NAME: "vllm", n.L_GEN_AI_REQUEST_MODEL: "my-own-llm"}
    assert value(registry, UNPRICED, unpriced) == 1
    assert (
        value(
            registry,
            f"{n.M_RUN_COST}_count",
            {n.L_GEN_AI_AGENT_NAME: "helper", n.L_GEN_AI_REQUEST_MODEL: "my-own-llm"},
        )
        is None
    )
    assert not any(s.value for m in registry.collect() if m.name == n.M_COST for s in m.samples)


def test_the_response_model_is_priced_first_then_the_request_model(telemetry: Telemetry) -> None:
    with telemetry.llm_call("my-alias", "openai") as call:  # an alias the table does not know
        call.set_response(response_model="gpt-4o", input_tokens=M, output_tokens=0)
    assert call.cost_usd == pytest.approx(2.5)  # gpt-4o's input price
    with telemetry.llm_call("gpt-4o-mini", "openai") as call:
        call.set_response(response_model="some-deployment-name", input_tokens=M, output_tokens=0)
    assert call.cost_usd == pytest.approx(0.15)


def test_a_call_that_failed_after_its_usage_arrived_is_billed(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    run = telemetry.agent_run("helper", "gpt-4o-mini")
    with run:
        call = telemetry.llm_call("gpt-4o-mini", "openai", stream=True)
        call.set_response(input_tokens=M, output_tokens=0)  # the usage chunk came...
        call.fail(ConnectionResetError("stream cut"))  # ...then the stream was cut
        never_billed = telemetry.llm_call("gpt-4o-mini", "openai")
        never_billed.fail(TimeoutError())  # no usage: nothing billed, nothing unpriced
    assert run.spend.total_usd == pytest.approx(0.15)
    labels = {
        n.L_GEN_AI_PROVIDER_NAME: "openai",
        n.L_GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        n.L_GEN_AI_AGENT_NAME: "helper",
    }
    assert value(registry, COST, labels) == pytest.approx(0.15)
    assert (
        value(
            registry,
            UNPRICED,
            {n.L_GEN_AI_PROVIDER_NAME: "openai", n.L_GEN_AI_REQUEST_MODEL: "gpt-4o-mini"},
        )
        is None
    )


def test_a_runs_total_and_its_tasks_sum_every_call_beneath_them(
    telemetry: Telemetry, exporter: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    task = telemetry.batch_task("b1", "t1", 5, 0.0)
    with task:
        run = telemetry.agent_run("helper", "gpt-4o-mini")
        # a call the callback handler records with an explicit parent context
        with telemetry.llm_call("gpt-4o-mini", "openai", parent=run.context) as call:
            call.set_response(input_tokens=M, output_tokens=0)
        with run:
            for _ in range(2):  # e.g. a retried call: each billed attempt is a call
                with telemetry.llm_call("gpt-4o-mini", "openai") as call:
                    call.set_response(input_tokens=M, output_tokens=M)
        task.finish(n.STATUS_COMPLETED)
    assert run.spend.total_usd == pytest.approx(2 * 0.75 + 0.15)
    assert task.spend.total_usd == pytest.approx(2 * 0.75 + 0.15)
    spans = {s.name: s.attributes or {} for s in exporter.get_finished_spans()}
    assert spans["invoke_agent helper"][n.AGENTWATCH_RUN_COST_AMOUNT] == pytest.approx(1.65)
    assert spans["batch_task"][n.AGENTWATCH_TASK_COST_AMOUNT] == pytest.approx(1.65)
    run_labels = {n.L_GEN_AI_AGENT_NAME: "helper", n.L_GEN_AI_REQUEST_MODEL: "gpt-4o-mini"}
    assert value(registry, f"{n.M_RUN_COST}_sum", run_labels) == pytest.approx(1.65)
    assert value(registry, f"{n.M_RUN_COST}_count", run_labels) == 1


def test_prices_are_looked_up_once_per_provider_and_model() -> None:
    table = PriceTable()
    first = table.price("openai", "gpt-4o-mini")
    assert table.price("openai", "gpt-4o-mini") is first
    assert table.price("nobody", "unknown-model") is None
    assert ("nobody", "unknown-model") in table._cache  # a miss is kept too


def test_a_price_table_that_fails_to_load_fails_nothing_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``preload`` (an Agent calls it when made) swallows what loading the bundled table
    raises: a call's telemetry absorbs it at the first lookup instead."""

    def broken() -> None:
        raise TypeError("a newer genai-prices")

    monkeypatch.setattr(prices, "get_snapshot", broken)
    PriceTable().preload()
    with pytest.raises(TypeError):
        PriceTable().price("openai", "gpt-4o-mini")


def test_the_report_has_a_cost_column_and_a_total(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    with telemetry.agent_run("helper", "gpt-4o-mini"):
        for _ in range(2):
            with telemetry.llm_call("gpt-4o-mini", "openai") as call:
                call.set_response(input_tokens=M, output_tokens=0)
    with telemetry.llm_call("my-own-llm", "vllm") as call:
        call.set_response(input_tokens=10, output_tokens=5)
    with telemetry.tool_call("search"):
        pass
    for rows in (
        stats_from_registry(registry),
        stats_from_text(generate_latest(registry).decode()),
    ):
        by_name = {r.name: r for r in rows}
        assert by_name["chat gpt-4o-mini"].cost_usd == pytest.approx(0.30)
        assert by_name["invoke_agent helper"].cost_usd == pytest.approx(0.30)
        assert by_name["chat my-own-llm"].cost_usd is None
        assert by_name["chat my-own-llm"].unpriced_calls == 1
        assert by_name["execute_tool search"].cost_usd is None
        text = format_report(rows)
        lines = {line.split()[0] + " " + line.split()[1]: line for line in text.splitlines()[3:-1]}
        assert text.splitlines()[2].split()[-1] == "cost"
        assert lines["chat gpt-4o-mini"].endswith("$0.300000")
        assert lines["invoke_agent helper"].endswith("$0.300000")
        assert lines["chat my-own-llm"].endswith("unpriced")
        assert lines["execute_tool search"].endswith("-")
        assert text.splitlines()[-1] == "total cost: $0.300000 (1 calls unpriced)"


def test_agentwatch_report_shows_cost_from_a_scraped_page(
    telemetry: Telemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        telemetry.agent_run("helper", "gpt-4o-mini"),
        telemetry.llm_call("gpt-4o-mini", "openai") as call,
    ):
        call.set_response(input_tokens=1000, output_tokens=500)
    server = start_metrics_server(telemetry, port=0)
    try:
        assert main(["report", "--url", f"http://127.0.0.1:{server.port}/metrics"]) == 0
    finally:
        server.stop()
    out = capsys.readouterr().out.splitlines()
    expected = f"${1000 * 0.15 / M + 500 * 0.60 / M:.6f}"
    assert out[2].split()[-1] == "cost"
    assert any(line.startswith("chat gpt-4o-mini") and line.endswith(expected) for line in out)
    assert out[-1] == f"total cost: {expected}"
