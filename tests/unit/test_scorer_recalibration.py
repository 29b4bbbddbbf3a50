"""The scorer recalibrates its serving version when the stream changes under it."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client import generate_latest

from bus.clients.base import TopicPartition
from bus.clients.memory import MemoryBroker
from bus.messages import Point, Prediction
from core.telemetry import TelemetryConfig
from tests.unit.test_scorer_service import (
    TOPICS,
    Running,
    linear,
    predicted,
    scorer_broker,
    wait_for,
)

Array = NDArray[np.float64]


def truth(x: Array) -> Array:
    return np.asarray(2 * x[:, 0] - x[:, 1] + 0.5, dtype=np.float64)


def labelled(n: int, start: int, changed: bool) -> list[bytes]:
    """``n`` points with noise 0.05; after the change the target is ``-1.5 * truth - 1``."""
    rng = np.random.default_rng(start)
    x = rng.uniform(-1, 1, (n, 3))
    y = truth(x)
    if changed:
        y = -1.5 * y - 1.0
    y = y + rng.normal(0, 0.05, n)
    return [Point(f"p{start + i}", x[i].tolist(), float(y[i])).to_bytes() for i in range(n)]


@pytest.fixture
def broker() -> MemoryBroker:
    return scorer_broker()


def serve(broker: MemoryBroker, changed: dict[int, bool], **config: object) -> Running:
    """300 points as the version learnt them on each partition, then 300 more per
    partition, changed on the partitions ``changed`` says; the two interleaved."""
    broker.produce(TOPICS.models, linear(1, "m", truth).to_bytes(), key=b"m")
    running = Running(broker, **config)
    try:
        for step, start in enumerate((0, 300)):
            batches = {
                p: labelled(300, 1000 * p + start, changed=bool(step) and changed[p])
                for p in changed
            }
            for values in zip(*batches.values(), strict=True):
                for partition, value in zip(batches, values, strict=True):
                    broker.produce(TOPICS.points, value, partition=partition)
            total = 300 * len(changed) * (step + 1)
            wait_for(lambda total=total: running.scorer.stats.predictions == total)
    finally:
        running.close()
    assert running.error is None
    return running


def served(broker: MemoryBroker, partition: int) -> list[Prediction]:
    """The predictions of one partition's points, in their order."""
    by_id = {p.id: p for p in predicted(broker)}
    return [by_id[f"p{1000 * partition + i}"] for i in range(600)]


def test_after_a_change_predictions_are_recalibrated_and_say_so(broker: MemoryBroker) -> None:
    running = serve(broker, {0: True})
    predictions = served(broker, 0)
    assert all(p.calibration is None for p in predictions[:300])
    errors = np.array([abs(p.prediction - (p.y or 0.0)) for p in predictions])
    assert errors[:300].max() < 0.5
    assert np.count_nonzero(errors[300:] > 0.5) <= 6, "only the first changed points err"
    assert np.sqrt(np.mean(errors[320:] ** 2)) < 0.1
    recalibrated = [p for p in predictions[300:] if p.calibration is not None]
    assert len(recalibrated) >= 290
    a, b = recalibrated[-1].calibration or (0.0, 0.0)
    assert a == pytest.approx(-1.0, abs=0.1) and b == pytest.approx(-1.5, abs=0.1)
    assert running.scorer.stats.jumps == 1
    assert running.scorer.stats.calibrated == len(recalibrated)
    telemetry = running.scorer.telemetry(TelemetryConfig("scorer", port=0))
    try:
        text = generate_latest(telemetry.registry).decode()
    finally:
        telemetry.watch.close()
    assert 'streamscore_scorer_recalibrations_total{service="scorer"} 1.0' in text
    assert (
        f'streamscore_scorer_recalibrated_predictions_total{{service="scorer"}} '
        f"{float(len(recalibrated))}" in text
    )


def test_a_partition_still_on_the_old_stream_keeps_the_version_s_output(
    broker: MemoryBroker,
) -> None:
    running = serve(broker, {0: True, 1: False})
    old = served(broker, 1)
    assert all(p.calibration is None for p in old)
    assert max(abs(p.prediction - (p.y or 0.0)) for p in old) < 0.5
    new = served(broker, 0)[310:]
    assert all(p.calibration is not None for p in new)
    assert max(abs(p.prediction - (p.y or 0.0)) for p in new) < 0.5
    assert running.scorer.stats.jumps == 1


def test_turned_off_the_version_serves_its_own_output(broker: MemoryBroker) -> None:
    running = serve(broker, {0: True}, recalibrate=False)
    predictions = served(broker, 0)
    assert all(p.calibration is None for p in predictions)
    errors = np.array([abs(p.prediction - (p.y or 0.0)) for p in predictions[300:]])
    assert np.count_nonzero(errors > 0.5) > 250
    assert running.scorer.stats.jumps == 0


def test_a_partition_given_to_another_scorer_is_forgotten(broker: MemoryBroker) -> None:
    running = serve(broker, {0: True, 1: True})
    step = running.scorer.step
    assert step.calibration[0].active and step.calibration[1].active
    step.revoked([TopicPartition(TOPICS.points, 1)])
    assert set(step.calibration) == {0}
