"""The counting of the gateway fresh-starts benchmark: per start, over the starts, its rows."""

from __future__ import annotations

from bench.gateway_starts import (
    Answer,
    Failure,
    ReadyAnswer,
    add_rows,
    all_workers_ready,
    summarize,
    total,
)
from bench.report import BenchResult

PIDS = {101, 102, 103, 104}
CENSUS = [ReadyAnswer(pid, 200, (pid - 100,)) for pid in sorted(PIDS)]


def test_refusals_before_the_first_answer_are_not_listening_yet_not_failures() -> None:
    answers = [
        Answer(sent_s=1.0, ms=1500.0, status=503, reason="the model catalogue is still loading"),
        Answer(sent_s=1.0, ms=2000.0, status=200),  # first 200 read at 3.0 s
        Answer(sent_s=3.5, ms=40.0, status=200),
        Answer(sent_s=4.0, ms=5200.0, status=504, reason="no reply"),
    ]
    failures = [
        Failure(0.1, "ConnectionRefusedError"),
        Failure(0.2, "ConnectionRefusedError"),
        Failure(0.3, "ConnectionResetError"),
        Failure(2.6, "ConnectionRefusedError"),  # after the first answer (a 503 at 2.5 s)
        Failure(6.0, "RemoteDisconnected"),
    ]
    summary = summarize(answers, failures, CENSUS, PIDS)
    assert summary.statuses == {"503": 1, "200": 2, "504": 1}
    assert summary.reasons == {"503 the model catalogue is still loading": 1, "504 no reply": 1}
    assert summary.non_200 == 2
    assert summary.not_listening == 2
    assert summary.errors_before == {"ConnectionResetError": 1}
    assert summary.errors_after == {"ConnectionRefusedError": 1, "RemoteDisconnected": 1}
    assert summary.first_200_s == 3.0
    assert summary.max_ms == 5200.0
    assert summary.max_ms_after_first == 5200.0  # sent at 4.0 s, after the first 200
    assert summary.workers_ready == 4
    assert summary.partitions == (1, 2, 3, 4)
    assert summary.all_workers


def test_a_start_without_any_answer_counts_every_refusal_and_no_first_200() -> None:
    summary = summarize([], [Failure(0.1, "ConnectionRefusedError")] * 3, [], PIDS)
    assert summary.statuses == {}
    assert summary.not_listening == 3
    assert summary.first_200_s is None
    assert summary.max_ms == 0.0
    assert not summary.all_workers


def test_all_workers_need_their_own_partition_and_every_pid_of_the_gateway() -> None:
    assert all_workers_ready(CENSUS, PIDS)
    assert all_workers_ready([*CENSUS, CENSUS[0]], PIDS)  # one worker asked twice
    stranded = [*CENSUS[:3], ReadyAnswer(104, 503, ())]
    assert not all_workers_ready(stranded, PIDS)
    shared = [*CENSUS[:3], ReadyAnswer(104, 200, (1,))]
    assert not all_workers_ready(shared, PIDS)
    assert not all_workers_ready(CENSUS[:3], PIDS)  # one never answered
    assert not all_workers_ready(CENSUS, PIDS | {105})  # a fifth (restarted) worker
    assert not all_workers_ready(CENSUS[:3], PIDS - {104})  # only three workers at all


def test_totals_and_rows_over_starts() -> None:
    good = summarize([Answer(0.5, 1200.0, 200), Answer(2.0, 30.0, 200)], [], CENSUS, PIDS)
    late = summarize(
        [Answer(0.2, 900.0, 200), Answer(1.5, 6000.0, 504, "no reply")],
        [Failure(0.1, "ConnectionRefusedError"), Failure(9.0, "ConnectionResetError")],
        CENSUS[:3],
        PIDS,
    )
    totals = total([good, late])
    assert totals.starts == 2
    assert totals.statuses == {"200": 3, "504": 1}
    assert totals.non_200 == 1
    assert totals.not_listening == 1
    assert totals.errors_after == 1
    assert totals.max_ms == 6000.0
    assert totals.max_ms_after_first == 6000.0
    assert totals.first_200_s == [1.7, 1.1]
    assert totals.all_workers == 1

    result = BenchResult("7b")
    add_rows(result, "confluent, 2 starts", totals, 5000, "logs")
    verdicts = {row.metric: (row.value, row.met) for row in result.rows}
    assert verdicts["504 answers"] == (1, False)
    assert verdicts["max latency"] == (6000.0, False)
    assert verdicts["non-200 answers"] == (1, None)
    assert verdicts["starts with all 4 workers answering"] == (1, False)
