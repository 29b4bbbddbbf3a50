"""The scorer on a real broker: hold, predict, hot swap, poison, exactly-once, scale-out."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bus.clients import driver_for, make_admin, make_producer
from bus.messages import InferReply, InferRequest, Prediction, Score
from bus.reply import ReplyAddress, header
from bus.settings import KafkaSettings
from bus.topics import Topics
from core.shutdown import StopFlag
from scorer.config import ScorerConfig
from scorer.service import Scorer
from tests.integration.streams import (
    linear_model,
    linear_points,
    predicted_ids,
    read_until,
    send_model,
    send_points,
    service_env,
    start_service,
    stop_service,
)


def predictions_of(records: list) -> list[Prediction]:  # type: ignore[type-arg]
    return [Prediction.from_bytes(r.value) for r in records]


@pytest.fixture
def run_scorer(
    kafka_settings: KafkaSettings, unique_name: Callable[[str], str]
) -> Iterator[Callable[..., Scorer]]:
    """Run scorers in threads; every one is stopped at the end of the test."""
    running: list[tuple[StopFlag, threading.Thread]] = []

    def run(topics: Topics, **config: object) -> Scorer:
        stop = StopFlag()
        base = ScorerConfig(
            group_id=unique_name("scorer"),
            requests_group_id=unique_name("requests"),
            transactional_id=unique_name("tx"),
            scores_interval_s=0.5,
        )
        config_ = replace(base, **config)  # type: ignore[arg-type]
        scorer = Scorer(driver_for(kafka_settings), topics, config_, stop=stop)
        thread = threading.Thread(target=scorer.run, daemon=True)
        thread.start()
        running.append((stop, thread))
        return scorer

    yield run
    for stop, thread in running:
        stop.set()
        thread.join(timeout=30)


def test_holds_without_a_model_then_predicts_every_point(
    kafka_settings: KafkaSettings, fresh_topics: Topics, run_scorer: Callable[..., Scorer]
) -> None:
    points = linear_points(3000)
    send_points(kafka_settings, fresh_topics, points)
    scorer = run_scorer(fresh_topics)
    time.sleep(2.0)
    assert scorer.stats.predictions == 0, "no model yet: the scorer must hold"
    assert read_until(kafka_settings, fresh_topics.predictions, bool, timeout_s=1.0) == []

    send_model(kafka_settings, fresh_topics, linear_model(1))
    records = read_until(kafka_settings, fresh_topics.predictions, predicted_ids(len(points)))
    predictions = predictions_of(records)
    assert {p.id for p in predictions} == {p.id for p in points}
    by_id = {p.id: p for p in points}
    for prediction in predictions:
        assert prediction.model == "multivariate"
        assert prediction.version == 1
        assert prediction.y == by_id[prediction.id].y
        assert prediction.prediction == pytest.approx(by_id[prediction.id].y, abs=1e-9)

    scores = [
        Score.from_bytes(r.value)
        for r in read_until(kafka_settings, fresh_topics.scores, lambda rs: len(rs) > 0)
    ]
    assert scores, "scores must be published"
    assert scores[-1].model == "multivariate"
    assert scores[-1].r2 == pytest.approx(1.0, abs=1e-9)
    assert scores[-1].count == min(scores[-1].window, len(points))


def test_hot_swap_within_a_second_and_no_gap(
    kafka_settings: KafkaSettings, fresh_topics: Topics, run_scorer: Callable[..., Scorer]
) -> None:
    send_model(kafka_settings, fresh_topics, linear_model(1))
    run_scorer(fresh_topics)
    send_points(kafka_settings, fresh_topics, linear_points(500, seed=1))
    read_until(kafka_settings, fresh_topics.predictions, predicted_ids(500))

    published = time.time()
    send_model(kafka_settings, fresh_topics, linear_model(2, slope=3.0))
    stream_stop = threading.Event()

    def stream() -> None:
        start = 500
        while not stream_stop.is_set():
            send_points(kafka_settings, fresh_topics, linear_points(50, seed=start, start=start))
            start += 50
            time.sleep(0.05)

    writer = threading.Thread(target=stream)
    writer.start()
    try:
        records = read_until(
            kafka_settings,
            fresh_topics.predictions,
            lambda rs: any(Prediction.from_bytes(r.value).version == 2 for r in rs),
            timeout_s=10,
        )
    finally:
        stream_stop.set()
        writer.join()
    first_v2 = next(r for r in records if Prediction.from_bytes(r.value).version == 2)
    assert first_v2.timestamp / 1000 - published < 1.0
    # every point sent gets a prediction, before and after the swap
    sent = int(Prediction.from_bytes(records[-1].value).id.split("-")[1])
    final = read_until(kafka_settings, fresh_topics.predictions, predicted_ids(sent))
    ids = {Prediction.from_bytes(r.value).id for r in final}
    assert all(f"p-{i}" in ids for i in range(sent)), "a gap in the predictions"


BAD_VALUES: dict[str, bytes | None] = {
    "not JSON": b"{oops",
    "not UTF-8": b"\xff\xfe{}",
    "not an object": b"[1, 2]",
    "missing id": b'{"x": [1, 2]}',
    "x not a list": b'{"id": "b1", "x": "1,2"}',
    "non-numeric": b'{"id": "b2", "x": [1, "a"]}',
    "boolean feature": b'{"id": "b3", "x": [true, 1]}',
    "NaN": b'{"id": "b4", "x": [NaN, 1]}',
    "Infinity": b'{"id": "b5", "x": [1, Infinity]}',
    "overflow": b'{"id": "b6", "x": [1, 1e400]}',
    "wrong y type": b'{"id": "b7", "x": [1, 2], "y": "3"}',
    "wrong ts type": b'{"id": "b8", "x": [1, 2], "ts": 1.5}',
    "empty id": b'{"id": "", "x": [1, 2]}',
    "oversize": b'{"id": "b9", "x": [' + b"1," * 500_010 + b"1]}",  # just over 1 MB
    "wrong feature count": b'{"id": "b10", "x": [1, 2, 3]}',
    "tombstone": None,
}


def test_poison_goes_to_deadletter_and_good_points_are_scored(
    kafka_settings: KafkaSettings, fresh_topics: Topics, run_scorer: Callable[..., Scorer]
) -> None:
    send_model(kafka_settings, fresh_topics, linear_model(1))
    good = linear_points(200)
    producer = make_producer(kafka_settings, max_request_size=8 * 1024 * 1024)
    bad_iter = iter(BAD_VALUES.items())
    for i, point in enumerate(good):
        producer.send(fresh_topics.points, key=b"k", value=point.to_bytes())
        if i % 10 == 0 and (bad := next(bad_iter, None)) is not None:
            producer.send(fresh_topics.points, key=b"k", value=bad[1])
    producer.flush()
    producer.close()
    scorer = run_scorer(fresh_topics)

    read_until(kafka_settings, fresh_topics.predictions, predicted_ids(len(good)))
    dead = read_until(
        kafka_settings, fresh_topics.deadletter, lambda rs: len(rs) >= len(BAD_VALUES)
    )
    assert len(dead) == len(BAD_VALUES)
    assert sorted((r.value or b"") for r in dead) == sorted(
        (v or b"") for v in BAD_VALUES.values()
    ), "dead letters must carry the original bytes"
    for record in dead:
        assert header(record, "error"), "every dead letter says why"
        assert header(record, "source-topic") == fresh_topics.points.encode()
        assert header(record, "source-partition") is not None
        assert header(record, "source-offset") is not None
    reasons = {(r.value or b"")[:20]: header(r, "error") for r in dead}
    assert b"expected 2 features, got 3" in reasons[b'{"id": "b10", "x": [']  # type: ignore[operator]
    assert scorer.stats.predictions == len(good)


def test_answers_requests_on_their_own_path(
    kafka_settings: KafkaSettings, fresh_topics: Topics, run_scorer: Callable[..., Scorer]
) -> None:
    send_model(kafka_settings, fresh_topics, linear_model(1))
    # a backlog of points the request must not wait behind
    send_points(kafka_settings, fresh_topics, linear_points(40_000, seed=7))
    run_scorer(fresh_topics)
    time.sleep(1.0)
    requests = [
        (InferRequest("r1", [[1.0, 2.0], [0.0, 0.0]], "multivariate"), 200),
        (InferRequest("r2", [[1.0, 2.0]], "nope"), 404),
        (InferRequest("r3", [[1.0, 2.0, 3.0]], "multivariate"), 400),
        (InferRequest("r4", [[0.5, 0.5]]), 200),
    ]
    producer = make_producer(kafka_settings)
    stale = InferRequest("r0", [[1.0, 2.0]], "multivariate")
    producer.send(
        fresh_topics.requests,
        value=stale.to_bytes(),
        headers=ReplyAddress("r0-c", fresh_topics.replies, 1).request_headers(),
        timestamp_ms=int((time.time() - 120) * 1000),
    )
    sent_at = time.monotonic()
    for request, _ in requests:
        address = ReplyAddress(request.id + "-c", fresh_topics.replies, 1)
        producer.send(
            fresh_topics.requests, value=request.to_bytes(), headers=address.request_headers()
        )
    producer.flush()
    records = read_until(kafka_settings, fresh_topics.replies, lambda rs: len(rs) >= 4)
    elapsed = time.monotonic() - sent_at
    replies = {header(r, "correlation-id"): (r, InferReply.from_bytes(r.value)) for r in records}
    for request, status in requests:
        record, reply = replies[(request.id + "-c").encode()]
        assert record.partition == 1
        assert reply.status == status, reply
    assert b"r0-c" not in replies, "a request nobody waits for any more is skipped"
    assert replies[b"r1-c"][1].predictions == pytest.approx([0.5, 0.5], abs=1e-9)
    assert "expected 2 features, got 3" in (replies[b"r3-c"][1].error or "")
    assert elapsed < 5.0, f"requests waited {elapsed:.1f}s behind the points backlog"


def _run_cli_scorer(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path, name: str, **env: str
) -> object:
    return start_service(
        ["scorer"],
        service_env(kafka_settings, topics, **env),
        tmp_path / f"{name}.log",
    )


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_exactly_once_survives_sigkill(
    kafka_settings: KafkaSettings,
    fresh_topics: Topics,
    tmp_path: Path,
    unique_name: Callable[[str], str],
    client: str,
) -> None:
    send_model(kafka_settings, fresh_topics, linear_model(1))
    points = linear_points(60_000, seed=3)
    send_points(kafka_settings, fresh_topics, points)
    env = {
        "STREAMSCORE_SCORER_DELIVERY": "exactly-once",
        "STREAMSCORE_SCORER_GROUP": unique_name("eos"),
        "STREAMSCORE_SCORER_TRANSACTIONAL_ID": unique_name("eos-tx"),
        "STREAMSCORE_SCORER_MAX_BATCH": "500",
        "STREAMSCORE_KAFKA_CLIENT": client,
    }
    first = _run_cli_scorer(kafka_settings, fresh_topics, tmp_path, "first", **env)
    read_until(kafka_settings, fresh_topics.predictions, predicted_ids(5000))
    stop_service(first, signal.SIGKILL)  # type: ignore[arg-type]
    second = _run_cli_scorer(kafka_settings, fresh_topics, tmp_path, "second", **env)
    try:
        records = read_until(
            kafka_settings, fresh_topics.predictions, predicted_ids(len(points)), timeout_s=120
        )
    finally:
        assert stop_service(second) == 0  # type: ignore[arg-type]
    counts = Counter(Prediction.from_bytes(r.value).id for r in records)
    assert set(counts) == {p.id for p in points}
    assert max(counts.values()) == 1, "a prediction was duplicated"


def test_two_scorers_share_and_take_over(
    kafka_settings: KafkaSettings,
    fresh_topics: Topics,
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> None:
    send_model(kafka_settings, fresh_topics, linear_model(1))
    env = {"STREAMSCORE_SCORER_GROUP": unique_name("pair"), "STREAMSCORE_SCORER_MAX_BATCH": "200"}
    one = _run_cli_scorer(kafka_settings, fresh_topics, tmp_path, "one", **env)
    two = _run_cli_scorer(kafka_settings, fresh_topics, tmp_path, "two", **env)
    time.sleep(4.0)  # both join the group
    points = linear_points(40_000, seed=4)
    send_points(kafka_settings, fresh_topics, points[:20_000])
    read_until(kafka_settings, fresh_topics.predictions, predicted_ids(2000))
    stop_service(one, signal.SIGKILL)  # type: ignore[arg-type]
    send_points(kafka_settings, fresh_topics, points[20_000:])
    try:
        records = read_until(
            kafka_settings, fresh_topics.predictions, predicted_ids(len(points)), timeout_s=120
        )
    finally:
        assert stop_service(two) == 0  # type: ignore[arg-type]
    assert {Prediction.from_bytes(r.value).id for r in records} == {p.id for p in points}


def test_sigterm_stops_cleanly(
    kafka_settings: KafkaSettings,
    fresh_topics: Topics,
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> None:
    send_model(kafka_settings, fresh_topics, linear_model(1))
    group = unique_name("term")
    scorer = _run_cli_scorer(
        kafka_settings, fresh_topics, tmp_path, "term", STREAMSCORE_SCORER_GROUP=group
    )
    send_points(kafka_settings, fresh_topics, linear_points(1000))
    read_until(kafka_settings, fresh_topics.predictions, predicted_ids(1000))
    started = time.monotonic()
    assert stop_service(scorer) == 0  # type: ignore[arg-type]
    assert time.monotonic() - started < 15
    assert "scorer: stopped after 1000 records" in (tmp_path / "term.log").read_text()
    admin = make_admin(kafka_settings)
    try:
        committed = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    assert sum(meta.offset for meta in committed.values()) == 1000, committed
