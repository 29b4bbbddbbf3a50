"""The scorer's predictions counted per serving model's name, on its metrics."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bus.clients.memory import MemoryBroker
from bus.messages import Point
from core.telemetry import TelemetryConfig
from tests.unit.test_scorer_service import (
    TOPICS,
    Running,
    linear,
    predicted,
    publish,
    scorer_broker,
    wait_for,
)

PER_MODEL = "streamscore_scorer_model_predictions_total"
ALL = "streamscore_predictions_total"


Array = NDArray[np.float64]


def truth(x: Array) -> Array:
    return np.asarray(2 * x[:, 0] - x[:, 1] + 0.5, dtype=np.float64)


def labelled_points(n: int, start: int) -> list[bytes]:
    x = np.random.default_rng(start).uniform(-1, 1, (n, 3))
    y = truth(x)
    return [Point(f"p{start + i}", x[i].tolist(), float(y[i])).to_bytes() for i in range(n)]


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """labels -> value of the samples called ``name`` in a scrape of ``registry``."""
    text = generate_latest(registry).decode()
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


@pytest.fixture
def broker() -> MemoryBroker:
    return scorer_broker()


def test_predictions_are_counted_per_serving_model(broker: MemoryBroker) -> None:
    broker.produce(
        TOPICS.models,
        linear(1, "alpha", lambda x: np.asarray(3 - x[:, 0], dtype=np.float64)).to_bytes(),
        key=b"alpha",
    )
    running = Running(broker, min_scored=10)
    telemetry = running.scorer.telemetry(TelemetryConfig("scorer", port=0))
    try:
        publish(broker, labelled_points(100, start=0))
        wait_for(lambda: running.scorer.stats.predictions == 100)
        # a far better model arrives: it serves from the next batch on; new versions of it
        # keep counting under its name alone
        broker.produce(TOPICS.models, linear(1, "beta", truth).to_bytes(), key=b"beta")
        serving = running.scorer.serving
        wait_for(lambda: (model := serving()) is not None and model.name == "beta")
        publish(broker, labelled_points(40, start=100))
        wait_for(lambda: running.scorer.stats.predictions == 140)
        broker.produce(TOPICS.models, linear(2, "beta", truth).to_bytes(), key=b"beta")
        wait_for(lambda: (model := serving()) is not None and model.version == 2)
        publish(broker, labelled_points(20, start=140))
        wait_for(lambda: running.scorer.stats.predictions == 160)
        per_model = samples(telemetry.registry, PER_MODEL)
        overall = samples(telemetry.registry, ALL)
    finally:
        telemetry.watch.close()
        running.close()
    assert running.error is None
    written = Counter(p.model for p in predicted(broker))
    assert written == {"alpha": 100, "beta": 60}
    assert per_model == {(("model", name),): float(n) for name, n in written.items()}
    assert overall == {(("service", "scorer"),): 160.0}
    assert running.scorer.stats.model_predictions == dict(written)
