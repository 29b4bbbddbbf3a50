"""The trainer on a real broker: versions, SIGKILL restarts per client, dead letters, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from bus.clients import driver_for
from bus.clients.base import Record, TopicPartition
from bus.messages import ModelVersion, Point
from bus.settings import KafkaSettings
from bus.table import Table
from bus.topics import Topics
from core.errors import BusError
from core.shutdown import StopFlag
from trainer.config import TrainerConfig
from trainer.trainer import Trainer

TRAINER = [sys.executable, "-m", "streamscore", "trainer"]  # what `streamscore trainer` runs
# y = 1 + 2 x0 - 3 x1 + 0.5 x0^3: the cubic model's coefficients, in polynomial_powers order
# (x0, x1, x0^2, x0 x1, x1^2, x0^3, x0^2 x1, x0 x1^2, x1^3)
TRUE_INTERCEPT = 1.0
TRUE_CUBIC = [2.0, -3.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0]


def _target(x: np.ndarray) -> np.ndarray:
    return 1.0 + 2.0 * x[:, 0] - 3.0 * x[:, 1] + 0.5 * x[:, 0] ** 3


def make_points(n: int, seed: int, *, noise: float = 0.0, unlabelled_every: int = 0) -> list[bytes]:
    """``n`` points of the true function (every ``unlabelled_every``-th without a label)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (n, 2))
    y = _target(x) + rng.normal(scale=noise, size=n) if noise else _target(x)
    out = []
    for i in range(n):
        label = None if unlabelled_every and i % unlabelled_every == 0 else float(y[i])
        out.append(Point(f"s{seed}-{i}", x[i].tolist(), label).to_bytes())
    return out


def produce(
    settings: KafkaSettings,
    topic: str,
    values: list[bytes],
    partitions: int = 3,
    keys: list[bytes] | None = None,
) -> None:
    """Write values round-robin over the partitions, the i-th to partition i % partitions."""
    producer = driver_for(settings).producer()
    try:
        for i, value in enumerate(values):
            key = keys[i] if keys else None
            producer.send(topic, value, key=key, partition=i % partitions)
        producer.flush()
    finally:
        producer.close()


def read_all(settings: KafkaSettings, topic: str, timeout_s: float = 10.0) -> list[Record]:
    """Every committed record of a one-partition topic, from the beginning to its end."""
    with Table(driver_for(settings), topic) as table:
        table.open()
        return table.catch_up(timeout_s)


def committed(settings: KafkaSettings, group: str, topic: str, partitions: int) -> dict[str, Any]:
    """The group's committed offsets on ``topic``, by partition number as text."""
    consumer = driver_for(settings).consumer(group_id=group)
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        consumer.close()
    return {str(tp.partition): offset for tp, offset in found.items()}


def read_versions(settings: KafkaSettings, topic: str) -> list[ModelVersion]:
    """Every model version on ``topic``, in the order written; each must parse."""
    return [ModelVersion.from_bytes(r.value) for r in read_all(settings, topic)]


def latest(versions: list[ModelVersion]) -> dict[str, ModelVersion]:
    out: dict[str, ModelVersion] = {}
    for version in versions:
        out[version.name] = version
    return out


def wait_until(what: str, check: Callable[[], bool], timeout_s: float = 45.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def trained_all(settings: KafkaSettings, topic: str, count: int, names: set[str]) -> bool:
    """True once every model has a version trained on ``count`` points."""
    found = latest(read_versions(settings, topic))
    return set(found) >= names and all(found[n].trained_on["count"] == count for n in names)


@contextmanager
def running(
    settings: KafkaSettings, topics: Topics, config: TrainerConfig, **kwargs: Any
) -> Iterator[Trainer]:
    """A trainer in a thread, stopped (and its errors raised) on exit."""
    stop = StopFlag()
    trainer = Trainer(driver_for(settings), topics, config, stop=stop, **kwargs)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            trainer.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True, name=f"trainer-{id(trainer)}")
    thread.start()
    try:
        yield trainer
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the trainer did not stop"
        if errors:
            raise errors[0]


def is_running(trainer: Trainer) -> bool:
    """True while the thread `running` started for ``trainer`` is alive."""
    return any(t.name == f"trainer-{id(trainer)}" for t in threading.enumerate())


def check_versions(versions: list[ModelVersion]) -> None:
    """Versions of each name strictly increase in the order written; counts never go back."""
    by_name: dict[str, list[ModelVersion]] = {}
    for version in versions:
        by_name.setdefault(version.name, []).append(version)
    for name, seq in by_name.items():
        numbers = [v.version for v in seq]
        assert numbers == sorted(set(numbers)), f"{name}: versions {numbers}"
        counts = [v.trained_on["count"] for v in seq]
        assert counts == sorted(counts), f"{name}: counts {counts}"


def config(unique_name: Callable[[str], str], **overrides: Any) -> TrainerConfig:
    name = unique_name("trainer")
    base = TrainerConfig(group_id=name, transactional_id=name, publish_interval_s=0.3)
    return replace(base, **overrides)


def prefix_of(topics: Topics) -> str:
    return topics.points[: -len("points")]


# --- (1) versions of both models appear, increasing, valid, close to the truth ------------


def test_publishes_increasing_valid_versions_close_to_the_truth(
    kafka_settings: KafkaSettings, fresh_topics: Topics, unique_name: Callable[[str], str]
) -> None:
    values = make_points(6000, seed=1, noise=0.01) + make_points(300, seed=2, unlabelled_every=1)
    produce(kafka_settings, fresh_topics.points, values)
    future = 2_000_000_000.0  # an injected clock: created_at comes from it

    def clock() -> float:
        return future + time.monotonic()

    cfg = config(unique_name, publish_every=1000)
    with running(kafka_settings, fresh_topics, cfg, clock=clock) as trainer:
        wait_until(
            "versions trained on every point",
            lambda: trained_all(
                kafka_settings, fresh_topics.models, 6000, {"multivariate", "polynomial"}
            ),
        )
    versions = read_versions(kafka_settings, fresh_topics.models)
    check_versions(versions)
    assert len({v.version for v in versions if v.name == "polynomial"}) >= 2
    final = latest(versions)
    assert trainer.versions == {name: v.version for name, v in final.items()}
    cubic, linear = final["polynomial"], final["multivariate"]
    assert (cubic.kind, linear.kind) == ("polynomial", "multivariate")
    assert cubic.n_features == linear.n_features == 2
    assert cubic.params["degree"] == 3
    assert cubic.params["intercept"] == pytest.approx(TRUE_INTERCEPT, abs=0.01)
    np.testing.assert_allclose(cubic.params["coef"], TRUE_CUBIC, atol=0.02)
    np.testing.assert_allclose(linear.params["coef"], [2.3, -3.0], atol=0.05)
    assert cubic.train_score["r2"] is not None and cubic.train_score["r2"] > 0.999
    assert cubic.train_score["rmse"] == pytest.approx(0.01, rel=0.3)  # the noise: prequential
    assert cubic.created_at >= future * 1000
    offsets = cubic.trained_on["offsets"]
    assert sum(offsets.values()) == len(values)  # every record read, unlabelled included
    assert committed(kafka_settings, cfg.group_id, fresh_topics.points, 3) == offsets
    assert read_all(kafka_settings, fresh_topics.deadletter) == []


# --- (2) SIGKILL mid-stream, restart: same model as an uninterrupted trainer ---------------


def _trainer_process(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(TRAINER, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
@pytest.mark.parametrize(
    ("window", "partitions"),
    [(0, 3), (1500, 1)],
    ids=["cumulative-3-partitions", "window-1-partition"],
)
def test_restart_after_sigkill_matches_an_uninterrupted_trainer(
    kafka_settings: KafkaSettings,
    fresh_topics: Topics,
    unique_name: Callable[[str], str],
    make_topic: Callable[..., str],
    *,
    window: int,
    partitions: int,
    client: str,
) -> None:
    """Cumulative training gives the same model whatever the order partitions are read in;
    a window is reproducible when the order is (one partition)."""
    first = make_points(12_000, seed=3, noise=0.05, unlabelled_every=10)
    second = make_points(8_000, seed=4, noise=0.05, unlabelled_every=10)
    labelled = sum(1 for v in first + second if b'"y"' in v)
    produce(kafka_settings, fresh_topics.points, first, partitions)
    name = unique_name("trainer")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "STREAMSCORE_TOPIC_PREFIX": prefix_of(fresh_topics),
        "STREAMSCORE_TRAINER_GROUP": name,
        "STREAMSCORE_TRAINER_TRANSACTIONAL_ID": name,
        "STREAMSCORE_TRAINER_PUBLISH_EVERY": "700",
        "STREAMSCORE_TRAINER_PUBLISH_INTERVAL_S": "0.2",
        "STREAMSCORE_TRAINER_MAX_RECORDS": "300",
        "STREAMSCORE_TRAINER_WINDOW": str(window),
        "STREAMSCORE_LOG_LEVEL": "WARNING",
        "STREAMSCORE_KAFKA_CLIENT": client,
    }
    killed = _trainer_process(env)
    try:
        wait_until("a first version", lambda: bool(read_all(kafka_settings, fresh_topics.models)))
        # More points arrive while it trains; it dies in the middle of them.
        half = len(second) // 2
        produce(kafka_settings, fresh_topics.points, second[:half], partitions)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
    finally:
        if killed.poll() is None:
            killed.kill()
    before = read_versions(kafka_settings, fresh_topics.models)
    assert before, "the first trainer published nothing before it was killed"
    produce(kafka_settings, fresh_topics.points, second[half:], partitions)

    restarted = _trainer_process(env)
    try:
        wait_until(
            "the restarted trainer to train on every labelled point",
            lambda: trained_all(
                kafka_settings, fresh_topics.models, labelled, {"multivariate", "polynomial"}
            ),
        )
    finally:
        restarted.send_signal(signal.SIGTERM)
        _, err = restarted.communicate(timeout=30)
    assert restarted.returncode == 0, err.decode()[-2000:]

    versions = read_versions(kafka_settings, fresh_topics.models)
    assert versions[: len(before)] == before
    check_versions(versions)
    assert len(versions) > len(before)
    final = latest(versions)

    # The same data, read by a trainer that never stopped (another group, its own outputs).
    alone = replace(
        fresh_topics,
        models=make_topic(compact=True),
        trainer_state=make_topic(compact=True),
        deadletter=make_topic(),
    )
    settings = replace(kafka_settings, client=client)
    with running(settings, alone, config(unique_name, publish_every=5000, window=window)):
        wait_until(
            "the uninterrupted trainer",
            lambda: trained_all(
                kafka_settings, alone.models, labelled, {"multivariate", "polynomial"}
            ),
        )
    reference = latest(read_versions(kafka_settings, alone.models))
    for model in ("multivariate", "polynomial"):
        got, want = final[model].params, reference[model].params
        assert got["intercept"] == pytest.approx(want["intercept"], abs=1e-9)
        np.testing.assert_allclose(got["coef"], want["coef"], rtol=0, atol=1e-9)
        assert final[model].trained_on["count"] == labelled
        assert final[model].trained_on["window"] == (window or None)
        assert sum(final[model].trained_on["offsets"].values()) == len(first) + len(second)


# --- (3) bad records go to deadletter with the reason; training goes on -------------------


def test_bad_records_go_to_deadletter_and_training_goes_on(
    kafka_settings: KafkaSettings, fresh_topics: Topics, unique_name: Callable[[str], str]
) -> None:
    good = make_points(600, seed=5)
    bad = [
        b'{"id":"3d","x":[1.0,2.0,3.0],"y":1.0}',
        b"not json at all",
        b'{"x":[1.0,2.0],"y":1.0}',
        b'{"id":"nan","x":[1.0,NaN],"y":1.0}',
        b'{"id":"str","x":[1.0,2.0],"y":"high"}',
    ]
    values = good[:300] + bad + good[300:]
    keys = [b"k%d" % i for i in range(len(values))]
    produce(kafka_settings, fresh_topics.points, values, partitions=1, keys=keys)
    with running(kafka_settings, fresh_topics, config(unique_name)) as trainer:
        wait_until(
            "every good point trained",
            lambda: trained_all(kafka_settings, fresh_topics.models, 600, {"polynomial"}),
        )
    dead = read_all(kafka_settings, fresh_topics.deadletter)
    assert [r.value for r in dead] == bad
    assert [r.key for r in dead] == [b"k%d" % i for i in range(300, 305)]
    headers = [{k: v or b"" for k, v in r.headers} for r in dead]
    assert [h["source-offset"] for h in headers] == [b"%d" % i for i in range(300, 305)]
    assert {h["source-topic"] for h in headers} == {fresh_topics.points.encode()}
    assert {h["source-partition"] for h in headers} == {b"0"}
    reasons = [h["error"].decode() for h in headers]
    assert "expected 2 features like the stream, got 3" in reasons[0]
    assert "not JSON" in reasons[1]
    assert "'id'" in reasons[2] and "missing" in reasons[2]
    assert "finite" in reasons[3]
    assert "'y'" in reasons[4]
    assert trainer.stats.deadletters == 5
    cubic = latest(read_versions(kafka_settings, fresh_topics.models))["polynomial"]
    np.testing.assert_allclose(cubic.params["coef"], TRUE_CUBIC, atol=1e-9)


# --- (4) SIGTERM: prompt, clean exit 0, pending work published ------------------------------


def test_sigterm_exits_zero_promptly_after_publishing(
    kafka_settings: KafkaSettings, fresh_topics: Topics, unique_name: Callable[[str], str]
) -> None:
    produce(kafka_settings, fresh_topics.points, make_points(2500, seed=6))
    name = unique_name("trainer")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "STREAMSCORE_TOPIC_PREFIX": prefix_of(fresh_topics),
        "STREAMSCORE_TRAINER_GROUP": name,
        "STREAMSCORE_TRAINER_TRANSACTIONAL_ID": name,
        # Never due by count or time: only the stop publishes.
        "STREAMSCORE_TRAINER_PUBLISH_EVERY": "1000000",
        "STREAMSCORE_TRAINER_PUBLISH_INTERVAL_S": "3600",
    }
    process = subprocess.Popen(TRAINER, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(
            "the trainer to read its points",
            lambda: b"the stream has 2 features" in _peek(process),
            timeout_s=30,
        )
        time.sleep(1.0)
        assert process.stderr is not None
        os.set_blocking(process.stderr.fileno(), True)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err.decode()[-2000:]
    assert elapsed < 5.0
    final = latest(read_versions(kafka_settings, fresh_topics.models))
    assert {v.trained_on["count"] for v in final.values()} == {2500}
    assert {v.version for v in final.values()} == {1}


_peeked: dict[int, bytes] = {}


def _peek(process: subprocess.Popen[bytes]) -> bytes:
    """What the process has logged so far (read without blocking)."""
    assert process.stderr is not None
    os.set_blocking(process.stderr.fileno(), False)
    chunk = process.stderr.read() or b""
    _peeked[process.pid] = _peeked.get(process.pid, b"") + chunk
    return _peeked[process.pid]


# --- one trainer at a time: a second copy fences the first ----------------------------------


def test_a_second_trainer_takes_over_and_the_first_stops(
    kafka_settings: KafkaSettings, fresh_topics: Topics, unique_name: Callable[[str], str]
) -> None:
    produce(kafka_settings, fresh_topics.points, make_points(2000, seed=7))
    cfg = config(unique_name, publish_every=200, publish_interval_s=0.2)
    with (
        pytest.raises(BusError, match="took over"),
        running(kafka_settings, fresh_topics, cfg) as first,
    ):
        wait_until("the first trainer's versions", lambda: first.stats.versions > 0)
        with running(kafka_settings, fresh_topics, cfg) as second:
            wait_until("the second trainer's start", lambda: second.runner.stats.last_progress > 0)
            produce(kafka_settings, fresh_topics.points, make_points(1000, seed=8))
            wait_until(
                "the second trainer to train on everything",
                lambda: trained_all(
                    kafka_settings, fresh_topics.models, 3000, {"multivariate", "polynomial"}
                ),
            )
            wait_until("the first trainer to stop", lambda: not is_running(first))
    versions = read_versions(kafka_settings, fresh_topics.models)
    check_versions(versions)
