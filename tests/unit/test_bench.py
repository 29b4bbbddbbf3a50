"""The benchmarks' arithmetic and output, their settings, the pass-through step and the peer."""

from __future__ import annotations

import importlib.util
import json
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench import scoring
from bench.config import BenchConfig
from bench.context import BenchContext
from bench.data import point_values
from bench.load import LoadResult, split
from bench.models import model_version
from bench.passthrough import Identity, stream_config
from bench.peers.quix_scorer import linear_model
from bench.pipes import Mark, PipeRun, between
from bench.report import (
    BenchResult,
    Latency,
    Row,
    fmt,
    parse_target,
    ratio,
    render_table,
    span_rate,
    steady_rate,
    targets_summary,
    to_json,
    window_counts,
    write_results,
)
from bench.training import published_rate
from bus.clients.base import Record, TopicPartition
from bus.clients.memory import MemoryBroker
from bus.messages import Point
from bus.stream import Outcome, StreamRunner
from core.errors import ConfigError
from core.shutdown import StopFlag
from scorer.registry import load_model

# --- latency summaries and rates -------------------------------------------------------


def test_latency_summary_uses_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100 ms
    summary = Latency.of(list(reversed(values)))
    assert summary == Latency(count=100, p50=50.0, p99=99.0, max=100.0)
    assert summary.describe() == "p50 50.0 / p99 99.0 / max 100 ms"


def test_latency_of_nothing_is_nan_not_an_error() -> None:
    summary = Latency.of([])
    assert summary.count == 0
    assert math.isnan(summary.p50) and math.isnan(summary.p99) and math.isnan(summary.max)
    assert summary.describe() == "p50 - / p99 - / max - ms"


def test_span_rate_is_events_over_the_span_in_seconds() -> None:
    assert span_rate(1_000_000, 1_000, 51_000) == 20_000.0
    assert math.isnan(span_rate(10, 5_000, 5_000)), "no time passed"


def test_window_counts_show_holes_and_start_at_the_first_event() -> None:
    stamps = [1000.0, 1100.0, 1999.0, 2000.0, 4500.0]
    assert window_counts(stamps, 1000) == [3, 1, 0, 1]
    assert window_counts([], 1000) == []
    with pytest.raises(ValueError, match="positive"):
        window_counts(stamps, 0)


def test_steady_rate_is_the_median_of_full_windows() -> None:
    # 1,000 events a second for 5 s, then a partial window of 10 events
    stamps = [float(i) for i in range(5000)] + [5000.0 + i for i in range(10)]
    assert steady_rate(stamps, 1000) == 1000.0
    # a slow first second does not drag the figure down
    slow_start = [i * 10.0 for i in range(100)] + [1000.0 + i for i in range(4000)]
    assert steady_rate(slow_start, 1000) == 1000.0
    assert math.isnan(steady_rate([], 1000))


def test_ratio_guards_against_zero_and_nan() -> None:
    assert ratio(8.0, 10.0) == 0.8
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(1.0, math.nan))


# --- targets and the table -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "-"),
        (math.nan, "-"),
        (0.0, "0"),
        (123_456.7, "123,457"),
        (12.345, "12.3"),
        (0.8512, "0.851"),
        (0.004567, "0.00457"),
    ],
)
def test_fmt_keeps_three_significant_digits(value: float | None, expected: str) -> None:
    assert fmt(value) == expected


def test_targets_are_parsed_and_judged() -> None:
    assert parse_target(">= 50000") == (">=", 50000.0)
    assert parse_target("<= 1,000") == ("<=", 1000.0)
    for bad in ("50000", "> 5", "<="):
        with pytest.raises(ValueError, match="target"):
            parse_target(bad)
    assert Row("b", "c", "rate", 60_000.0, "pts/s", ">= 50000").met is True
    assert Row("b", "c", "rate", 40_000.0, "pts/s", ">= 50000").met is False
    assert Row("b", "c", "p99", 50.0, "ms", "<= 50").met is True, "the bound itself is met"
    assert Row("b", "c", "p99", math.nan, "ms", "<= 50").met is None, "no figure, no verdict"
    assert Row("b", "c", "p50", 3.0, "ms").met is None, "no target, no verdict"


def test_table_shows_value_unit_target_and_verdict() -> None:
    result = BenchResult("3. scorer")
    result.add("at-least-once", "points/s", 15_420.4, "pts/s", target=">= 50000")
    result.add("at-least-once", "rate / pass-through", 0.851, "x", target=">= 0.8")
    result.add("at-least-once", "note|with pipe", None, note="a|b")
    table = render_table(result.rows).splitlines()
    assert table[0] == "| benchmark | case | metric | value | target | note |"
    assert table[1] == "| --- | --- | --- | --- | --- | --- |"
    assert table[2] == (
        "| 3. scorer | at-least-once | points/s | 15,420 pts/s | >= 50000 pts/s MISSED |  |"
    )
    assert (
        table[3]
        == "| 3. scorer | at-least-once | rate / pass-through | 0.851 x | >= 0.8 x met |  |"
    )
    assert table[4] == "| 3. scorer | at-least-once | note\\|with pipe | - |  | a\\|b |"
    assert targets_summary(result.rows) == (1, 1)


def test_results_are_strict_json(tmp_path: Path) -> None:
    result = BenchResult("x")
    result.add("c", "m", math.nan, "ms")
    document = {"config": Latency.of([1.0, 2.0]), "value": math.inf, "rows": result.rows}
    path = write_results(tmp_path / "results", "20260101T000000Z", document)
    assert path.name == "20260101T000000Z.json"
    loaded = json.loads(path.read_text())
    assert loaded["config"] == {"count": 2, "p50": 1.0, "p99": 2.0, "max": 2.0}
    assert loaded["value"] is None
    assert loaded["rows"][0]["value"] is None
    assert to_json((1, [2.5, math.nan])) == [1, [2.5, None]]


# --- load generation -------------------------------------------------------------------


def test_split_shares_out_evenly_without_empty_parts() -> None:
    assert split(64, 2) == [32, 32]
    assert split(7, 3) == [3, 2, 2]
    assert split(1, 4) == [1]
    assert sum(split(100_000, 3)) == 100_000


def test_load_results_merge_and_rate() -> None:
    a = LoadResult(latencies_ms=[1.0, 2.0], started=100.0, ended=102.0)
    a.statuses.update({200: 2, 503: 1})
    b = LoadResult(latencies_ms=[3.0], started=100.0, ended=104.0)
    b.statuses.update({200: 1})
    b.errors.update({"ConnectionResetError": 1})
    a.merge(b)
    assert a.ok == 3
    assert a.seconds == 4.0
    assert a.rate == 0.75
    assert a.latency == Latency(3, 2.0, 3.0, 3.0)
    assert a.errors == {"ConnectionResetError": 1}


# --- the data ---------------------------------------------------------------------------


def test_bench_points_follow_the_contract() -> None:
    values = point_values(50, start=10, seed=1, ts=1_700_000_000_000)
    points = [Point.from_bytes(v) for v in values]
    assert [p.id for p in points] == [f"p-{i}" for i in range(10, 60)]
    assert all(len(p.x) == 3 and p.y is not None and p.ts == 1_700_000_000_000 for p in points)
    assert values == point_values(50, start=10, seed=1, ts=1_700_000_000_000), "deterministic"


# --- settings ----------------------------------------------------------------------------


def test_config_reads_partition_counts_and_clients() -> None:
    config = BenchConfig.from_env(
        {"BENCH_PARTITIONS": "4, 1", "BENCH_CLIENTS": "confluent", "BENCH_POINTS": "20000"}
    )
    assert config.partitions == (4, 1)
    assert config.clients == ("confluent",)
    assert config.points == 20_000
    default = BenchConfig.from_env({})
    assert default.partitions == (1, 4)
    assert default.clients == ("kafka-python", "confluent")
    assert default.points == 300_000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BENCH_PARTITIONS", "0,4"),
        ("BENCH_PARTITIONS", "one"),
        ("BENCH_PARTITIONS", ","),
        ("BENCH_CLIENTS", "kafka-python,aiokafka"),
        ("BENCH_CLIENTS", ","),
    ],
)
def test_config_refuses_what_it_cannot_run(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        BenchConfig.from_env({name: value})


def test_the_scorer_runs_every_client_at_every_count_and_exactly_once_at_the_most() -> None:
    config = BenchConfig(partitions=(1, 4), clients=("kafka-python", "confluent"))
    assert scoring.scorer_cases(config) == [
        ("kafka-python", 1, "at-least-once"),
        ("confluent", 1, "at-least-once"),
        ("kafka-python", 4, "at-least-once"),
        ("confluent", 4, "at-least-once"),
        ("kafka-python", 4, "exactly-once"),
        ("confluent", 4, "exactly-once"),
    ]
    assert scoring.scorer_cases(replace(config, scorer_exactly_once=False))[-1] == (
        "confluent",
        4,
        "at-least-once",
    )
    assert scoring.case("confluent", 1) == "confluent, 1 partition"
    assert (
        scoring.case("kafka-python", 4, "exactly-once")
        == "kafka-python, 4 partitions, exactly-once"
    )


# --- measuring and the target ratios ---------------------------------------------------


def test_a_run_is_measured_between_its_two_marks() -> None:
    rate, cpu_us, cores, seconds = between(Mark(10.0, 3.0, 5_000), Mark(12.0, 4.0, 45_000))
    assert (rate, cpu_us, cores, seconds) == (20_000.0, 25.0, 0.5, 2.0)
    assert all(math.isnan(v) for v in between(Mark(1.0, 1.0, 9), Mark(1.0, 1.0, 9))[:3])


def pipe(rate: float, cpu_us: float) -> PipeRun:
    return PipeRun(300_000, rate, rate, cpu_us, 0.5, 10.0)


def test_ratios_judge_the_scorer_against_the_peer_and_the_pass_through() -> None:
    result = BenchResult("4. scorer")
    scorer = {
        ("confluent", 4, "at-least-once"): pipe(60_000, 8.0),
        ("kafka-python", 4, "at-least-once"): pipe(16_000, 40.0),
    }
    passthrough = {("kafka-python", 4): pipe(20_000, 35.0), ("confluent", 4): pipe(90_000, 5.0)}
    scoring.ratios(result, 4, scorer, passthrough, pipe(30_000, 20.0))
    rows = {row.metric: row for row in result.rows}
    rate = rows["scorer on confluent / Quix Streams, points/s"]
    cpu = rows["Quix Streams / scorer on confluent, CPU per point"]
    python = rows["scorer / pass-through on kafka-python, points/s"]
    native = rows["scorer / pass-through on confluent, points/s"]
    assert (rate.value, rate.met) == (2.0, True)
    assert (cpu.value, cpu.met) == (2.5, True)
    assert (python.value, python.met) == (0.8, False), "0.8 x misses the 0.85 x target"
    assert native.value == pytest.approx(2 / 3) and native.met is None, "no target"
    assert {row.case for row in result.rows} == {"4 partitions"}


def test_ratios_without_the_peer_have_no_value_and_say_why() -> None:
    result = BenchResult("4. scorer")
    scorer = {("confluent", 1, "at-least-once"): pipe(60_000, 8.0)}
    scoring.ratios(result, 1, scorer, {}, None)
    assert [row.value for row in result.rows] == [None, None]
    assert all(row.met is None and "did not run" in row.note for row in result.rows)


def test_the_peer_is_skipped_with_a_reason_when_quixstreams_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "quixstreams" else real(name, *args),
    )
    result = scoring.run_peer(BenchContext({}), BenchConfig())
    assert [(row.metric, row.value) for row in result.rows] == [("skipped", None)]
    assert "quixstreams is not installed" in result.rows[0].note
    assert "skipped: quixstreams is not installed" in capsys.readouterr().out


def test_the_trainer_rate_is_read_from_its_versions() -> None:
    history = [(1_000, 5_000), (1_500, 105_000), (3_000, 305_000)]
    assert published_rate(history) == 150_000.0
    assert math.isnan(published_rate(history[:1]))


# --- the pass-through step and the peer's model ----------------------------------------


class StopWhenIdle(Identity):
    """The pass-through's step, stopping the loop once a poll finds nothing."""

    def __init__(self, target: str, partitions: int, stop: StopFlag) -> None:
        super().__init__(target, partitions)
        self._stop = stop

    def idle(self) -> Outcome | None:
        self._stop.set()
        return None


def test_the_pass_through_copies_every_record_and_commits() -> None:
    broker = MemoryBroker()
    broker.create_topic("points", 3)
    broker.create_topic("copies", 2)
    sent: list[Record] = []
    for i in range(60):
        key = None if i % 3 else f"k{i}".encode()
        sent.append(broker.produce("points", f"v{i}".encode(), key=key, partition=i % 3))
    stop = StopFlag()
    config = replace(stream_config("points", "copy", None), max_batch=7, poll_timeout_s=0.0)
    stats = StreamRunner(broker.driver(), config, StopWhenIdle("copies", 2, stop), stop=stop).run()
    copies = broker.records("copies")
    assert stats.records == stats.outputs == 60
    assert Counter((r.key, r.value) for r in copies) == Counter((r.key, r.value) for r in sent)
    by_value = {r.value: r for r in sent}
    for copy in copies:
        if copy.key is None:
            assert copy.partition == by_value[copy.value].partition % 2, "key-less: its number"
    assert broker.committed_offsets("copy") == {TopicPartition("points", p): 20 for p in range(3)}


def test_the_pass_through_is_exactly_once_with_a_transactional_id() -> None:
    config = stream_config("points", "copy", "copy-1")
    assert config.exactly_once and config.transactional_id == "copy-1"
    assert stream_config("points", "copy", None).delivery == "at-least-once"


def test_the_peer_predicts_what_the_scorer_predicts_and_writes_the_prediction_fields() -> None:
    model = model_version("multivariate", 3, "multivariate")
    predict = linear_model(model)
    rows = [[0.25, -0.5, 0.75], [1.0, 2.0, -3.0]]
    expected = load_model(model).predict(np.asarray(rows, dtype=np.float64)).tolist()
    first = predict({"id": "p-1", "x": rows[0], "y": 1.5, "ts": 77}, None, 99, [])
    second = predict({"id": "p-2", "x": rows[1]}, b"k", 99, [])
    assert first == {
        "id": "p-1",
        "prediction": pytest.approx(expected[0], rel=1e-12),
        "model": "multivariate",
        "version": 3,
        "y": 1.5,
        "ts": 77,
    }
    assert second["prediction"] == pytest.approx(expected[1], rel=1e-12)
    assert (second["y"], second["ts"]) == (None, 99), "no label; no ts: the record's timestamp"
    with pytest.raises(ValueError):
        predict({"id": "p-3", "x": [1.0, 2.0]}, None, 0, [])
    with pytest.raises(ConfigError, match="linear"):
        linear_model(model_version("polynomial", 1, "polynomial"))
