"""Helpers for integration tests: write and read topics, run a service as a process.

Topics are written and read through the client driver ``settings.client`` names
(``STREAMSCORE_KAFKA_CLIENT``; kafka-python unless told otherwise).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from bus.clients import driver_for
from bus.clients.base import Record
from bus.messages import ModelVersion, Point, Prediction
from bus.partitions import topic_partitions
from bus.settings import KafkaSettings
from bus.topics import Topics
from regressors import MultivariateRegressor

ROOT = Path(__file__).resolve().parents[2]


def linear_points(n: int, seed: int = 0, start: int = 0, labelled: bool = True) -> list[Point]:
    """Points of y = 2 x0 - x1 + 0.5 (no noise), ids ``p-<start+i>``."""
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-1, 1, (n, 2))
    return [
        Point(f"p-{start + i}", x.tolist(), float(2 * x[0] - x[1] + 0.5) if labelled else None)
        for i, x in enumerate(xs)
    ]


def linear_model(version: int, name: str = "multivariate", slope: float = 2.0) -> ModelVersion:
    """A multivariate model version predicting ``slope * x0 - x1 + 0.5``."""
    xs = np.random.default_rng(version).uniform(-1, 1, (50, 2))
    regressor = MultivariateRegressor().fit(xs, slope * xs[:, 0] - xs[:, 1] + 0.5)
    return ModelVersion(
        name=name,
        version=version,
        kind="multivariate",
        n_features=2,
        params=regressor.to_dict(),
        trained_on={"count": 50},
        train_score={"r2": 1.0, "rmse": 0.0, "mae": 0.0},
        created_at=int(time.time() * 1000),
    )


def send_values(
    settings: KafkaSettings, topic: str, values: Iterable[bytes | None], key: bytes | None = None
) -> None:
    """Write raw values to a topic and wait for the acks."""
    producer = driver_for(settings).producer()
    try:
        for value in values:
            producer.send(topic, value, key=key)
        producer.flush()
    finally:
        producer.close()


def send_points(settings: KafkaSettings, topics: Topics, points: Iterable[Point]) -> None:
    """Write points to the points topic, keyed by id so they spread over partitions."""
    producer = driver_for(settings).producer()
    try:
        for point in points:
            producer.send(topics.points, point.to_bytes(), key=point.id.encode())
        producer.flush()
    finally:
        producer.close()


def send_model(settings: KafkaSettings, topics: Topics, model: ModelVersion) -> None:
    """Publish a model version to the compacted models topic."""
    send_values(settings, topics.models, [model.to_bytes()], key=model.name.encode())


def read_until(
    settings: KafkaSettings,
    topic: str,
    done: Callable[[list[Record]], bool],
    timeout_s: float = 60.0,
) -> list[Record]:
    """Read a topic from the start (read_committed) until ``done(records)`` or the timeout."""
    consumer = driver_for(settings).consumer(group_id=None)
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        partitions = topic_partitions(consumer, [topic])
        consumer.assign(partitions)
        consumer.seek_to_beginning(partitions)
        while time.monotonic() < deadline and not done(records):
            records += consumer.poll(0.2)
    finally:
        consumer.close()
    return records


def service_env(settings: KafkaSettings, topics: Topics | None, **extra: str) -> dict[str, str]:
    """The environment of a service process pointed at the test broker (and ``topics``)."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "STREAMSCORE_PARTITIONS": "3",
        "STREAMSCORE_REPLY_PARTITIONS": "4",
        "PYTHONUNBUFFERED": "1",
    }
    if topics is not None:
        env["STREAMSCORE_TOPIC_PREFIX"] = topics.points[: -len("points")]
    env.update(extra)
    return env


def run_streamscore(
    env: Mapping[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``streamscore <args>`` to the end; its output is in the result."""
    return subprocess.run(
        [sys.executable, "-m", "streamscore", *args],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def predicted_ids(n: int) -> Callable[[list[Record]], bool]:
    """A ``read_until`` condition: predictions for ``n`` distinct point ids were read."""
    seen: set[str] = set()
    read = 0

    def done(records: list[Record]) -> bool:
        nonlocal read
        seen.update(Prediction.from_bytes(r.value).id for r in records[read:])
        read = len(records)
        return len(seen) >= n

    return done


def start_service(
    command: list[str], env: Mapping[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """Start ``streamscore <command>`` with its output in ``log_path``."""
    out = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "streamscore", *command],
        env=dict(env),
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def stop_service(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Signal a service and wait for it; return its exit code."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
