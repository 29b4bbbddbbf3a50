"""The chaos suite's pure parts: counting loss and duplicates, recovery times, the table."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bus.messages import MAX_MESSAGE_BYTES, Point
from bus.reply import CORRELATION_ID, REPLY_PARTITION, REPLY_TOPIC
from bus.topics import Topics
from chaos.counts import (
    DeadLetter,
    Observed,
    RunResult,
    digest,
    duplicated,
    first_after_s,
    judge,
    lost,
    recovery_s,
    worst,
)
from chaos.poison import (
    BROKER_LIMIT,
    DEADLETTER,
    PREDICTED,
    model_poisons,
    oversized_point,
    point_poisons,
    request_poisons,
)
from chaos.processes import last_error, producer_sent
from chaos.report import (
    format_recovery,
    render_failures,
    render_table,
    summarise,
    update_document,
)
from chaos.scenarios import (
    Written,
    check_poisons,
    check_versions_rise,
    dead_letters_of,
    new_versions,
    takeovers,
)

# --- counting ------------------------------------------------------------------------


def test_lost_are_valid_ids_never_predicted_unless_excused() -> None:
    predicted = {"a": 1, "c": 2, "x": 1}
    assert lost(["a", "b", "c", "d"], predicted) == ["b", "d"]
    assert lost(["a", "b", "c", "d"], predicted, excused=["d"]) == ["b"]
    assert lost([], predicted) == []


def test_duplicated_counts_ids_predicted_more_than_once() -> None:
    assert duplicated({"a": 1, "b": 2, "c": 3}) == 2
    assert duplicated({}) == 0


def test_observed_tracks_valid_invalid_and_copies() -> None:
    observed = Observed()
    observed.add_point("p-1")
    observed.add_point("p-1")
    observed.add_point(None, partition=2, offset=7)
    observed.add_point("p-2")
    observed.add_prediction("p-2", 0, 1000)
    assert observed.valid == {"p-1", "p-2"}
    assert observed.point_copies["p-1"] == 2
    assert (observed.invalid_points, observed.invalid_at) == (1, {(2, 7)})
    assert observed.missing() == ["p-1"]
    assert observed.prediction_times == {0: [1000]}


def test_versions_keep_the_order_they_came_in() -> None:
    observed = Observed(models=[(1, "m", 1), (2, "n", 1), (3, "m", 3), (4, "m", 2)])
    assert observed.versions("m") == [1, 3, 2]
    assert observed.versions() == [1, 1, 3, 2]


# --- recovery times -----------------------------------------------------------------


def test_recovery_is_decided_by_the_slowest_active_partition() -> None:
    times = {0: [100, 200, 1_300], 1: [150, 4_000], 2: [120, 1_050]}
    assert recovery_s(times, 1_000) == pytest.approx(3.0)


def test_a_partition_silent_since_the_fault_means_no_recovery() -> None:
    times = {0: [100, 1_200], 1: [150]}
    assert recovery_s(times, 1_000) is None


def test_partitions_that_started_after_the_fault_do_not_decide() -> None:
    times = {0: [100, 1_500], 1: [9_000]}  # partition 1 had no prediction before the fault
    assert recovery_s(times, 1_000) == pytest.approx(0.5)


def test_a_fault_before_any_prediction_waits_for_the_first_of_each_partition() -> None:
    assert recovery_s({0: [2_000], 1: [3_500]}, 1_000) == pytest.approx(2.5)
    assert recovery_s({}, 1_000) is None


def test_first_after_and_worst() -> None:
    assert first_after_s([100, 900, 2_400, 1_700], 1_000) == pytest.approx(0.7)
    assert first_after_s([100], 1_000) is None
    assert worst([1.0, 3.5, 2.0]) == 3.5
    assert worst([1.0, None]) is None
    assert worst([]) is None


# --- judging -----------------------------------------------------------------------------


def result(**fields: object) -> RunResult:
    base = RunResult("s", "kafka-python", points=10, recoveries=[1.0])
    for name, value in fields.items():
        setattr(base, name, value)
    return base


def test_a_clean_run_passes() -> None:
    assert judge(result(), exactly_once=True, faults=1).passed


def test_duplicates_fail_only_in_exactly_once() -> None:
    assert judge(result(duplicated=3), exactly_once=False, faults=1).passed
    failed = judge(result(duplicated=3), exactly_once=True, faults=1)
    assert failed.failures == ["3 point(s) predicted more than once in exactly-once mode"]


def test_loss_exits_missing_faults_and_no_recovery_each_fail() -> None:
    judged = judge(
        result(lost=2, exited=["scorer (exit 1)"], recoveries=[None]),
        exactly_once=False,
        faults=2,
    )
    assert judged.failures == [
        "2 valid point(s) never predicted",
        "services exited: scorer (exit 1)",
        "only 1 of 2 faults were injected",
        "no new prediction after 1 of 1 fault(s)",
    ]
    assert not judge(result(points=0), exactly_once=False, faults=1).passed


# --- the table and the document ------------------------------------------------------


def test_rows_sum_the_runs_of_a_scenario_and_keep_the_worst_recovery() -> None:
    runs = [
        result(points=100, lost=0, duplicated=1, deadletters=2, recoveries=[1.0, 4.25]),
        result(points=50, lost=3, duplicated=0, deadletters=0, recoveries=[2.0]),
        RunResult("other", "kafka-python", points=7),
    ]
    runs[1].fail("3 valid point(s) never predicted")
    runs[1].exited.append("scorer (exit 1)")
    rows = summarise(runs)
    assert [row.scenario for row in rows] == ["s", "other"]
    assert rows[0].cells() == [
        "s",
        "kafka-python",
        "2",
        "150",
        "3",
        "1",
        "2",
        "4.2 s (worst of 3)",
        "scorer (exit 1)",
        "FAIL",
    ]
    assert rows[1].cells()[-3:] == ["-", "none", "PASS"]


def test_recovery_text() -> None:
    assert format_recovery([]) == "-"
    assert format_recovery([2.04]) == "2.0 s"
    assert format_recovery([2.0, None]) == "never"


def test_the_table_is_markdown_with_numbers_right_aligned() -> None:
    table = render_table(summarise([result(points=12_345)]))
    lines = table.splitlines()
    assert lines[0].startswith("| scenario | client | runs | points | lost |")
    assert lines[1] == "|---|---|---:|---:|---:|---:|---:|---:|---|---|"
    assert lines[2] == "| s | kafka-python | 1 | 12,345 | 0 | 0 | 0 | 1.0 s | none | PASS |"


def test_failures_list_reasons_and_notes_per_run() -> None:
    first = result()
    second = result()
    second.fail("lost some")
    second.notes.append("scorer (exit 1): boom")
    text = render_failures([first, second])
    assert text.splitlines() == [
        "- **s** (kafka-python, run 2): FAIL",
        "  - lost some",
        "  - note: scorer (exit 1): boom",
    ]


def test_a_client_section_is_replaced_and_others_kept() -> None:
    text = "# Reliability\n\nprose\n"
    once = update_document(text, "kafka-python", "table one")
    twice = update_document(update_document(once, "confluent", "other"), "kafka-python", "two")
    assert "table one" not in twice
    assert twice.count("two") == 1
    assert twice.index("<!-- chaos results: kafka-python -->") < twice.index("confluent")
    assert twice.startswith("# Reliability\n\nprose\n")
    assert update_document(twice, "kafka-python", "two") == twice


# --- poison records ----------------------------------------------------------------------


def test_the_oversized_point_is_just_under_the_broker_limit_and_past_the_contract() -> None:
    value = oversized_point("r")
    assert len(value) == BROKER_LIMIT - 1024
    assert len(value) > MAX_MESSAGE_BYTES
    assert json.loads(value)["id"] == "r-oversized"


def test_point_poisons_halves_join_into_a_point_and_two_objects_share_a_value() -> None:
    poisons = {p.name: p for p in point_poisons("r")}
    first = poisons["first half of a point"].value or b""
    second = poisons["second half of a point"].value or b""
    assert Point.from_bytes(first + second).id == "r-halves"
    assert poisons["two objects in one value"].value == (
        b'{"id":"r-two-a","x":[0.5,0.5,0.5],"y":1.0}{"id":"r-two-b","x":[0.5,0.5,0.5],"y":1.0}'
    )
    huge = poisons["huge feature x=[1e40, 0.5, 0.5]"]
    assert (huge.expect, huge.point_id) == (PREDICTED, "r-huge-x")
    assert json.loads(huge.value or b"")["x"] == [1e40, 0.5, 0.5]
    assert {p.expect for p in poisons.values() if p is not huge} == {DEADLETTER}


def test_request_poisons_carry_the_headers_they_are_named_for() -> None:
    topics = Topics.with_prefix("pre.")
    poisons = {p.name: dict(p.headers) for p in request_poisons("r", topics)}
    assert poisons["request: reply-partition 999 does not exist"][REPLY_PARTITION] == b"999"
    assert poisons["request: reply-topic does not exist"][REPLY_TOPIC] == b"pre.no-such-topic"
    assert poisons["request: reply-topic is the points topic"][REPLY_TOPIC] == b"pre.points"
    assert poisons["request: no headers"] == {}
    abc = poisons["request: reply-partition 'abc'"]
    assert (abc[REPLY_PARTITION], abc[CORRELATION_ID]) == (b"abc", b"r-abc")


def test_model_poisons_have_every_field_of_the_contract() -> None:
    huge, far = model_poisons("r", "multivariate", 7)
    model = json.loads(huge.value or b"")
    assert set(model) == {
        "name",
        "version",
        "kind",
        "n_features",
        "params",
        "trained_on",
        "train_score",
        "created_at",
    }
    assert (model["name"], model["version"], model["params"]["intercept"]) == (
        "multivariate",
        7,
        1e308,
    )
    assert model["params"]["coef"] == [1e308] * 3
    assert json.loads(far.value or b"")["version"] == 10**15
    assert huge.key == far.key == b"multivariate"
    assert huge.meta["model"] == ("multivariate", 7)
    assert far.meta["model"] == ("multivariate", 10**15)


def written(name: str, value: bytes, offset: int, expect: str = DEADLETTER) -> Written:
    from chaos.poison import Poison

    point_id = "r-ok" if expect == PREDICTED else None
    return Written(Poison(name, "points", value, expect=expect, point_id=point_id), "t", 0, offset)


def test_dead_letters_are_matched_by_origin_or_value() -> None:
    by_origin = DeadLetter("scorer", "too big", "t", digest(b"cut"), None, 0, 5)
    by_value = DeadLetter("trainer", "not JSON", "t", digest(b"half"), None, None, None)
    no_reason = DeadLetter("trainer", "", "t", digest(b"quiet"), None, 0, 9)
    observed = Observed(deadletters=[by_origin, by_value, no_reason])
    assert dead_letters_of(observed, written("big", b"original", 5)) == [by_origin]
    assert dead_letters_of(observed, written("half", b"half", 6)) == [by_value]
    assert dead_letters_of(observed, written("quiet", b"quiet", 9)) == []


def test_poison_checks_fail_records_neither_dead_lettered_nor_predicted() -> None:
    observed = Observed(
        deadletters=[DeadLetter("scorer", "too big", "t", digest(b"cut"), None, 0, 5)],
        predicted=Counter({"r-ok": 1}),
    )
    checked = RunResult("poison", "kafka-python")
    check_poisons(
        observed,
        [
            written("big", b"original", 5),
            written("lost", b"gone", 6),
            written("huge", b"{}", 7, expect=PREDICTED),
        ],
        checked,
    )
    assert checked.failures == ["lost: not in deadletter with an error header"]
    assert checked.notes == [
        "big: dead-lettered, value altered (scorer: too big)",
        "huge: predicted",
    ]


def test_versions_that_go_back_fail_the_trainer_check() -> None:
    good = RunResult("trainer-kill", "kafka-python")
    check_versions_rise(Observed(models=[(1, "m", 1), (2, "m", 2)]), good)
    assert (good.failures, good.notes) == ([], ["m: v1 to v2"])
    bad = RunResult("trainer-kill", "kafka-python")
    check_versions_rise(Observed(models=[(1, "m", 3), (2, "m", 3)]), bad)
    assert bad.failures == ["versions of 'm' did not only go up: v3 then v3"]


# --- service logs ------------------------------------------------------------------------


def test_the_last_error_line_and_the_producer_count_come_from_logs(tmp_path: Path) -> None:
    log = tmp_path / "scorer.log"
    log.write_text(
        "2026 INFO scorer x: fine\n2026 ERROR scorer x: broker gone\n2026 INFO scorer x: bye\n"
    )
    assert last_error(log) == "2026 ERROR scorer x: broker gone"
    assert last_error(tmp_path / "missing.log") == "(no log)"
    producer = tmp_path / "producer.log"
    producer.write_text("sent 35,802 points to 'p.points' in 17.96 s (1,993 points/s)\n")
    assert producer_sent(producer) == 35_802
    assert producer_sent(log) is None


def test_the_model_versions_that_served_are_kept_with_their_first_time() -> None:
    observed = Observed()
    observed.add_prediction("a", 0, 100, ("m", 1))
    observed.add_prediction("b", 0, 200, ("m", 1))
    observed.add_prediction("c", 1, 300, ("m", 10**15))
    assert observed.served == {("m", 1): 100, ("m", 10**15): 300}


def test_takeover_times_skip_writes_in_flight_at_the_kill() -> None:
    observed = Observed()
    for ms in (100, 1_100, 3_000):  # 1_100: the killed scorer's last write, in flight
        observed.add_prediction("a", 0, ms)
    for ms in (200, 1_600):
        observed.add_prediction("b", 1, ms)
    assert takeovers(observed, [1_000]) == [pytest.approx(2.0)]
    observed.prediction_times[1] = [200]  # partition 1 never predicted again
    assert takeovers(observed, [1_000]) == [None]


def test_trainer_recoveries_run_from_each_restart_to_the_next_version() -> None:
    observed = Observed(models=[(500, "m", 1), (2_500, "m", 2), (2_600, "n", 2)])
    assert new_versions(observed, [1_000, 2_550, 3_000]) == [
        pytest.approx(1.5),
        pytest.approx(0.05),
        None,
    ]
