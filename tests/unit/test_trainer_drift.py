"""The trainer step on a drifting stream, fed as a running trainer is fed: in time order.

Points arrive a few dozen at a time over several partitions; the producer either
spreads them over every partition or fills one partition at a time (Kafka's sticky
partitioner, which the project's producer imitates for unkeyed points: each
partition then holds one regime only, and no partition changes on its own).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from bus.clients.base import Chunk, TopicPartition
from bus.clients.memory import MemoryBroker
from bus.messages import ModelVersion, Point
from bus.topics import Topics
from regressors import regressor_from_dict
from trainer.config import TrainerConfig
from trainer.step import TrainingStep

TOPICS = Topics()
PARTITIONS = 6
N, DRIFT_AT = 6000, 3000


def drifting(n: int, seed: int, drift_at: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """A cubic of two features; after ``drift_at`` another one (signs flipped, moved)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, (n, 2))
    before = (
        0.5 + x[:, 0] - 2 * x[:, 1] - x[:, 0] ** 2 + 0.5 * x[:, 0] * x[:, 1] + 0.5 * x[:, 1] ** 3
    )
    after = -2.0 - 1.5 * x[:, 0] + 3 * x[:, 1] + 1.5 * x[:, 0] ** 2 - 0.75 * x[:, 0] * x[:, 1]
    y = np.where(np.arange(n) < drift_at, before, after) + noise * rng.standard_normal(n)
    return x, y


def make_step(cfg: TrainerConfig) -> TrainingStep:
    broker = MemoryBroker()
    broker.create_topic(TOPICS.points, PARTITIONS)
    for topic in (TOPICS.models, TOPICS.trainer_state, TOPICS.deadletter):
        broker.create_topic(topic, 1)
    step = TrainingStep(broker.driver(), TOPICS, cfg, clock=lambda: 0.0)
    step.start([TopicPartition(TOPICS.points, p) for p in range(PARTITIONS)])
    return step


def feed(
    step: TrainingStep, values: list[bytes], partition: list[int], chunk: int
) -> tuple[list[ModelVersion], list[int]]:
    """``values`` in time order, ``chunk`` at a time; the versions and the point each came after."""
    n = len(values)
    offsets = [0] * PARTITIONS
    found: list[ModelVersion] = []
    after: list[int] = []
    for lo in range(0, n, chunk):
        groups: dict[int, list[bytes | None]] = {}
        for i in range(lo, min(n, lo + chunk)):
            groups.setdefault(partition[i], []).append(values[i])
        chunks = []
        for p, vals in groups.items():
            start, offsets[p] = offsets[p], offsets[p] + len(vals)
            keys: list[bytes | None] = [None] * len(vals)
            chunks.append(
                Chunk(TOPICS.points, p, offsets[p], (list(range(start, offsets[p])), keys, vals))
            )
        outcome = step.process_chunks(chunks)
        for output in outcome.outputs:
            if output.topic == TOPICS.models:
                found += [ModelVersion.from_bytes(v) for v in output.values if v is not None]
                after += [min(n, lo + chunk)] * len(output.values)
        if outcome.commit:
            step.committed(outcome)
    return found, after


def run(sticky: int, chunk: int = 40) -> tuple[TrainingStep, list[ModelVersion], list[int]]:
    """Feed the drifting stream in time order over `PARTITIONS` partitions."""
    cfg = replace(TrainerConfig(), group_id="g", transactional_id="tx", workers=0)
    step = make_step(cfg)
    x, y = drifting(N, seed=5, drift_at=DRIFT_AT, noise=0.5)
    values = [Point(f"p{i}", x[i].tolist(), float(y[i])).to_bytes() for i in range(N)]
    partition = [(i // sticky if sticky else i) % PARTITIONS for i in range(N)]
    found, after = feed(step, values, partition, chunk)
    return step, found, after


@pytest.mark.parametrize("sticky", [0, 1000], ids=["spread", "one-partition-at-a-time"])
def test_a_drift_is_found_versions_come_quickly_and_the_models_follow(
    sticky: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trainer.step")
    step, found, after = run(sticky)
    assert any("drift detected" in r.getMessage() for r in caplog.records)
    cubic = [(v, at) for v, at in zip(found, after, strict=True) if v.name == "polynomial"]
    assert cubic[-1][0].trained_on["drifts"] >= 1
    # quick versions: one within 300 points of the drift (the regular pace is 1000)
    assert any(DRIFT_AT < at <= DRIFT_AT + 300 for _, at in cubic)
    # the last cubic version follows the new regime (the noise is 0.5)
    xt, yt = drifting(2000, seed=9, drift_at=0, noise=0.0)
    model = regressor_from_dict(cubic[-1][0].params)
    assert float(np.sqrt(np.mean((model.predict(xt) - yt) ** 2))) < 0.1
    assert step.count == N


def test_no_version_rests_on_fewer_than_two_points_per_coefficient(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A cubic of 6 features has 84 coefficients: its first version waits for 168 points."""
    caplog.set_level(logging.INFO, logger="trainer.step")
    cfg = replace(TrainerConfig(), group_id="g", transactional_id="tx", workers=0, publish_every=50)
    step = make_step(cfg)
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (400, 6))
    y = x @ np.arange(1.0, 7.0) + rng.normal(scale=0.5, size=400)
    values = [Point(f"p{i}", x[i].tolist(), float(y[i])).to_bytes() for i in range(400)]
    found, after = feed(step, values, [0] * 400, chunk=10)
    first: dict[str, tuple[ModelVersion, int]] = {}
    for v, at in zip(found, after, strict=True):
        first.setdefault(v.name, (v, at))
    assert first["multivariate"][1] == 50  # 7 coefficients: 14 points are enough
    cubic, at = first["polynomial"]
    assert 168 <= at <= 200 and cubic.trained_on["count"] >= 168
    assert cubic.version == 1
    assert any(
        "no version until its fit rests on 168 points" in r.getMessage() for r in caplog.records
    )
