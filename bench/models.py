"""Model versions for the benchmarks, fitted on their own data, published as the trainer does."""

from __future__ import annotations

import time

import numpy as np

from bench.data import BIAS, WEIGHTS
from bus.clients import make_producer
from bus.messages import ModelVersion
from bus.settings import KafkaSettings
from regressors import MultivariateRegressor, PolynomialRegressor, Regressor


def fitted(kind: str, slope: float = 1.0, seed: int = 0) -> Regressor:
    """A regressor of ``kind`` fitted on 500 points of the benchmark data (3 features).

    ``slope`` scales the true weights, so versions of one model predict differently.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (500, len(WEIGHTS)))
    y = x @ (slope * np.asarray(WEIGHTS)) + BIAS + rng.normal(0.0, 0.1, 500)
    model: Regressor = (
        MultivariateRegressor() if kind == "multivariate" else PolynomialRegressor(degree=3)
    )
    return model.fit(x, y)


def model_version(name: str, version: int, kind: str, slope: float = 1.0) -> ModelVersion:
    """A ``models`` message for a freshly fitted regressor."""
    regressor = fitted(kind, slope, seed=version)
    return ModelVersion(
        name=name,
        version=version,
        kind=kind,  # type: ignore[arg-type]
        n_features=len(WEIGHTS),
        params=regressor.to_dict(),
        trained_on={"count": 500},
        train_score={"r2": 0.99, "rmse": 0.1 if kind == "multivariate" else 0.12, "mae": 0.08},
        created_at=int(time.time() * 1000),
    )


def publish(settings: KafkaSettings, topic: str, models: list[ModelVersion]) -> list[int]:
    """Publish model versions (keyed by name) and wait for the acks; their record timestamps."""
    producer = make_producer(settings, linger_ms=0)
    try:
        futures = [producer.send(topic, key=m.name.encode(), value=m.to_bytes()) for m in models]
        producer.flush()
        return [int(f.get(timeout=30).timestamp) for f in futures]
    finally:
        producer.close()


def default_models(version: int = 1) -> list[ModelVersion]:
    """What the default trainer publishes: a multivariate and a cubic polynomial model."""
    return [
        model_version("multivariate", version, "multivariate"),
        model_version("polynomial", version, "polynomial"),
    ]
