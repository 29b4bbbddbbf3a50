"""The benchmarks' arithmetic and output, and the scorer fast paths they measure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from bench.data import point_values
from bench.load import LoadResult, split
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
from bus.messages import Point, Prediction
from scorer.batch import encode_predictions, parse_points
from streamscore.errors import MessageError

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


# --- the data and the scorer's fast paths ----------------------------------------------


def record(
    value: bytes | None, offset: int = 0, timestamp: int = 1_700_000_000_000
) -> ConsumerRecord:
    return ConsumerRecord(
        "points", 0, None, offset, timestamp, 0, None, value, [], None, -1, len(value or b""), -1
    )


def test_bench_points_follow_the_contract() -> None:
    values = point_values(50, start=10, seed=1, ts=1_700_000_000_000)
    points = [Point.from_bytes(v) for v in values]
    assert [p.id for p in points] == [f"p-{i}" for i in range(10, 60)]
    assert all(len(p.x) == 3 and p.y is not None and p.ts == 1_700_000_000_000 for p in points)
    assert values == point_values(50, start=10, seed=1, ts=1_700_000_000_000), "deterministic"


def test_predictions_are_encoded_exactly_like_the_contract_does() -> None:
    ids = ["p-1", 'é\u2028"quoted"\\', "x" * 128]
    values = [1.0 / 3.0, -2.5e-300, 12345678901234.5]
    ys = [0.1, None, 3.0]
    stamps = [0, 1_700_000_000_000, 2**41]
    fast = encode_predictions(ids, values, ys, stamps, model="poly\u00f1", version=7)
    slow = [
        Prediction(i, v, "poly\u00f1", 7, y, t).to_bytes()
        for i, v, y, t in zip(ids, values, ys, stamps, strict=True)
    ]
    assert fast == slow
    assert Prediction.from_bytes(fast[1]).id == ids[1]


def test_parse_fast_path_gives_the_contract_points() -> None:
    values = [
        *point_values(200, seed=2),
        b'{"id":"int-features","x":[1,2,3],"y":4}',  # ints are numbers too
        b'{"id":"no-label","x":[0.5,0.5,0.5],"extra":{"ignored":true}}',
    ]
    batch = parse_points([record(v, i) for i, v in enumerate(values)])
    assert not batch.invalid
    assert batch.points == [Point.from_bytes(v) for v in values]
    assert batch.y[-2] == 4.0 and type(batch.y[-2]) is float, "labels are floats"
    assert batch.event_times()[-1] == 1_700_000_000_000, "no ts: the record's timestamp"


@pytest.mark.parametrize(
    "bad",
    [
        b'{"id":"a","x":[1e999]}',  # decodes to infinity
        b'{"id":"a","x":[true]}',  # a bool is not a number
        b'{"id":"a","x":[1],"y":1e999}',
        b'{"id":"a","x":[1],"y":' + b"9" * 400 + b"}",  # beyond float range
        b'{"id":"a","x":[' + b"9" * 400 + b"]}",
        b'{"id":"a","x":[1],"ts":-1}',
        b'{"id":"a","x":[1],"ts":1.5}',
        b'{"id":"","x":[1]}',
        b'{"id":"' + b"i" * 129 + b'","x":[1]}',
        b'{"id":"a","x":[]}',
        b'{"id":"a","x":"1"}',
        b'{"id":7,"x":[1]}',
        b'{"x":[1]}',
        b"[1, 2]",
    ],
)
def test_parse_fast_path_rejects_what_the_contract_rejects(bad: bytes) -> None:
    good = point_values(20, seed=3)
    values = [*good[:10], bad, *good[10:]]
    batch = parse_points([record(v, i) for i, v in enumerate(values)])
    assert [p.id for p in batch.points] == [Point.from_bytes(v).id for v in good]
    assert [r.offset for r, _ in batch.invalid] == [10]
    with pytest.raises(MessageError) as expected:
        Point.from_bytes(bad)
    assert batch.invalid[0][1] == str(expected.value)
