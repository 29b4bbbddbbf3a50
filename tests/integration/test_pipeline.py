"""The whole pipeline as users run it: producer, trainer and scorer processes on a real broker.

Each test runs once per Kafka client library (``STREAMSCORE_KAFKA_CLIENT``): the
services and the test's own reads all use that client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from bus.messages import ModelVersion, Prediction, Score
from bus.settings import CLIENTS, KafkaSettings
from bus.topics import Topics
from tests.integration.streams import (
    predicted_ids,
    read_until,
    run_streamscore,
    service_env,
    start_service,
    stop_service,
)


def produce(env: dict[str, str], *args: str) -> None:
    """Run ``streamscore producer`` to the end."""
    result = run_streamscore(env, "producer", *args)
    assert result.returncode == 0, result.stdout + result.stderr


@dataclass(frozen=True)
class Pipeline:
    """A running trainer and scorer: their environment, and settings for the test's reads."""

    env: dict[str, str]
    settings: KafkaSettings


@pytest.fixture(params=CLIENTS)
def pipeline(
    request: pytest.FixtureRequest,
    kafka_settings: KafkaSettings,
    fresh_topics: Topics,
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> Iterator[Pipeline]:
    """A trainer and a scorer running on this test's topics with one client library."""
    client: str = request.param
    env = service_env(
        kafka_settings,
        fresh_topics,
        STREAMSCORE_KAFKA_CLIENT=client,
        STREAMSCORE_TRAINER_GROUP=unique_name("trainer"),
        STREAMSCORE_TRAINER_TRANSACTIONAL_ID=unique_name("trainer-tx"),
        STREAMSCORE_TRAINER_PUBLISH_EVERY="2000",
        STREAMSCORE_TRAINER_WINDOW="4000",
        STREAMSCORE_SCORER_GROUP=unique_name("scorer"),
        STREAMSCORE_SCORER_REQUESTS_GROUP=unique_name("requests"),
        STREAMSCORE_SCORER_SCORES_EVERY="500",
        STREAMSCORE_PRODUCER_FEATURES="2",
        STREAMSCORE_PRODUCER_FUNCTION="cubic",
    )
    trainer = start_service(["trainer"], env, tmp_path / "trainer.log")
    scorer = start_service(["scorer"], env, tmp_path / "scorer.log")
    try:
        yield Pipeline(env, replace(kafka_settings, client=client))
    finally:
        assert stop_service(scorer) == 0, (tmp_path / "scorer.log").read_text()[-3000:]
        assert stop_service(trainer) == 0, (tmp_path / "trainer.log").read_text()[-3000:]


def test_end_to_end(fresh_topics: Topics, pipeline: Pipeline) -> None:
    kafka_settings = pipeline.settings
    n = 20_000
    produce(pipeline.env, "--count", str(n), "--run-id", "e2e")
    records = read_until(kafka_settings, fresh_topics.predictions, predicted_ids(n), 240)
    predictions = [Prediction.from_bytes(r.value) for r in records]
    assert len({p.id for p in predictions}) == n, "every point id gets a prediction"

    models = [
        ModelVersion.from_bytes(r.value)
        for r in read_until(kafka_settings, fresh_topics.models, lambda rs: False, 3)
    ]
    published = {(m.name, m.version) for m in models}
    assert {name for name, _ in published} == {"multivariate", "polynomial"}
    for name in ("multivariate", "polynomial"):
        versions = [m.version for m in models if m.name == name]
        assert versions == sorted(versions) and len(set(versions)) == len(versions) >= 2
    assert {(p.model, p.version) for p in predictions} <= published, (
        "predictions name real model versions"
    )

    scores = [
        Score.from_bytes(r.value)
        for r in read_until(kafka_settings, fresh_topics.scores, lambda rs: False, 3)
    ]
    polynomial = [s for s in scores if s.model == "polynomial" and s.count >= 500]
    assert polynomial, "the polynomial model is scored"
    assert polynomial[-1].r2 is not None and polynomial[-1].r2 > 0.9


def own_output(prediction: Prediction) -> float:
    """What the version itself said: the prediction before its ``calibration``."""
    if prediction.calibration is None:
        return prediction.prediction
    a, b = prediction.calibration
    return (prediction.prediction - a) / b


def rms(values: list[float]) -> float:
    """Root mean square of ``values`` (at least one)."""
    assert values
    return float(sum(v * v for v in values) / len(values)) ** 0.5


def test_drift_brings_new_versions_and_scores_recover(
    fresh_topics: Topics, pipeline: Pipeline
) -> None:
    kafka_settings = pipeline.settings
    n, drift = 24_000, 12_000
    # paced like a live stream, so scores come out every 500 labelled points rather
    # than once per (large) catch-up batch
    produce(pipeline.env, "--count", str(n), "--drift-after", str(drift), "--rate", "4000")
    predictions = [
        Prediction.from_bytes(r.value)
        for r in read_until(kafka_settings, fresh_topics.predictions, predicted_ids(n), 240)
    ]
    models = [
        ModelVersion.from_bytes(r.value)
        for r in read_until(kafka_settings, fresh_topics.models, lambda rs: False, 3)
    ]
    after_drift = [
        m for m in models if m.name == "polynomial" and m.trained_on["count"] >= drift + 4000
    ]
    assert after_drift, "versions trained on the new function appear"
    scores = [
        s
        for s in (
            Score.from_bytes(r.value)
            for r in read_until(kafka_settings, fresh_topics.scores, lambda rs: False, 3)
        )
        if s.model == "polynomial"
    ]
    # The predictions, by point number (the ids end in it). The version's own output errs
    # from the drift on; what is served is recalibrated within a few points of it (each
    # partition on its own), and comes back. (Rolling scores are published per batch: when
    # the scorer catches up on a backlog, the few scores of the drift's batches may all
    # fall before a model had learned, so the errors are read from the predictions.)
    served = {int(p.id[-6:]): p.prediction - p.y for p in predictions if p.y is not None}
    own = {int(p.id[-6:]): own_output(p) - p.y for p in predictions if p.y is not None}
    before = rms([served[i] for i in range(drift - 2000, drift) if i in served])
    own_after = rms([own[i] for i in range(drift, drift + 200) if i in own])
    # recalibrated within the first 1,000 (each partition, and each new version of the
    # name, needs three points of the change before it is)
    own_span = rms([own[i] for i in range(drift, drift + 1000) if i in own])
    served_span = rms([served[i] for i in range(drift, drift + 1000) if i in served])
    at_the_end = rms([served[i] for i in range(n - 2000, n) if i in served])
    assert own_after > 3 * before, ("the drift shows in the version's errors", before, own_after)
    assert served_span < own_span, ("recalibrated", own_span, served_span)
    assert any(p.calibration for p in predictions if drift <= int(p.id[-6:]) < drift + 1000)
    assert at_the_end < 2 * before, ("the errors come back", before, at_the_end)
    r2 = [s.r2 for s in scores if s.r2 is not None]
    assert r2[-1] > 0.9, "rolling scores recover after the drift"
