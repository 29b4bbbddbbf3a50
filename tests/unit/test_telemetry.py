"""Metrics and health of the services: core.telemetry, and the scorer's on the in-memory driver."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bus.clients.base import TransientBusError
from bus.clients.memory import MemoryBroker
from bus.messages import ModelVersion, Point
from bus.topics import Topics
from core.shutdown import StopFlag
from core.telemetry import (
    OTHER_REASON,
    REASON_CLASSES,
    Health,
    TelemetryConfig,
    TelemetryServer,
    reason_class,
    registry_of,
)
from regressors import MultivariateRegressor
from scorer.config import ScorerConfig
from scorer.service import Scorer
from tests.unit.test_scorer_service import scorer_broker

TOPICS = Topics()
STALL_S = 60.0


class FakeClock:
    """Seconds that pass only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def model(version: int = 1) -> ModelVersion:
    xs = np.random.default_rng(version).uniform(-1, 1, (50, 3))
    regressor = MultivariateRegressor().fit(xs, 2 * xs[:, 0] - xs[:, 1] + 0.5)
    return ModelVersion(
        name="multivariate",
        version=version,
        kind="multivariate",
        n_features=3,
        params=regressor.to_dict(),
        trained_on={"count": 50},
        train_score={"r2": 1.0, "rmse": 0.0, "mae": 0.0},
        created_at=0,
    )


def publish_points(broker: MemoryBroker, n: int, start: int = 0, bad: int = 0) -> None:
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        broker.produce(
            TOPICS.points, Point(f"p{i}", rng.uniform(-1, 1, 3).tolist(), 1.0 * i).to_bytes()
        )
    for i in range(bad):
        broker.produce(TOPICS.points, b'{"id": "bad-%d", "x": [1.0]}' % i)  # wrong width


def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def broker() -> MemoryBroker:
    return scorer_broker()


class Running:
    """A scorer on the memory broker, in a thread; its telemetry on a fake clock."""

    def __init__(self, broker: MemoryBroker, clock: FakeClock) -> None:
        self.stop = StopFlag()
        config = replace(ScorerConfig(), scores_interval_s=0.1, scores_every=10)
        self.scorer = Scorer(broker.driver(), TOPICS, config, stop=self.stop, retry_s=30.0)
        self.telemetry = self.scorer.telemetry(
            TelemetryConfig("scorer", port=0, stall_s=STALL_S), clock=clock
        )
        self.thread = threading.Thread(target=self.scorer.run, daemon=True)

    def start(self) -> Running:
        self.thread.start()
        return self

    def metrics(self) -> dict[str, float]:
        """Every sample of a scrape, by name and labels."""
        text = generate_latest(self.telemetry.registry).decode()
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                found[f"{sample.name}{{{labels}}}"] = sample.value
        return found

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        self.telemetry.watch.close()


@pytest.fixture
def running(broker: MemoryBroker) -> Iterator[tuple[Running, FakeClock]]:
    clock = FakeClock()
    run = Running(broker, clock)
    yield run, clock
    run.close()


# --- health ------------------------------------------------------------------------------


def test_a_stalled_scorer_turns_unhealthy_in_time_and_healthy_when_it_moves(
    broker: MemoryBroker, running: tuple[Running, FakeClock]
) -> None:
    run, clock = running
    broker.produce(TOPICS.models, model().to_bytes(), key=b"multivariate")
    publish_points(broker, 100)
    run.start()
    wait_for(lambda: run.scorer.stats.predictions == 100)
    health, watch = run.telemetry.health, run.telemetry.watch

    gate = threading.Event()
    step = run.scorer.observed.step
    process = step.process

    def stalled(records):  # type: ignore[no-untyped-def]
        gate.wait()
        return process(records)

    step.process = stalled  # type: ignore[method-assign]
    publish_points(broker, 50, start=100)
    watch.poll()
    assert watch.backlog(ScorerConfig().group_id) == 50
    assert health.live()[0]  # the stall starts now
    clock.now += STALL_S - 1
    watch.poll()
    assert health.live()[0], "not yet past the limit"
    clock.now += 2
    watch.poll()
    alive, why = health.live()
    assert not alive and "no progress for 61 s" in why and "backlog 50" in why

    gate.set()  # the loop moves again
    wait_for(lambda: run.scorer.stats.predictions == 150)
    watch.poll()
    assert health.live() == (True, "ok")
    assert watch.backlog() == 0


def test_an_idle_scorer_stays_live_and_without_a_model_is_not_ready(
    broker: MemoryBroker, running: tuple[Running, FakeClock]
) -> None:
    run, clock = running
    publish_points(broker, 20)
    run.start()
    health, watch = run.telemetry.health, run.telemetry.watch
    watch.poll()
    assert watch.backlog() == 20
    clock.now += 10 * STALL_S
    watch.poll()
    assert health.live()[0], "holding for a model is not a stall"
    ready, why = health.ready()
    assert not ready and "no model yet" in why

    broker.produce(TOPICS.models, model().to_bytes(), key=b"multivariate")
    wait_for(lambda: run.scorer.stats.predictions == 20)
    watch.poll()
    assert health.ready() == (True, "ok")

    broker.fail_next("end_offsets", TransientBusError("broker gone"), times=100)
    watch.poll()
    clock.now += 31  # the last good read is too old now
    ready, why = health.ready()
    assert not ready and "broker gone" in why


def test_health_needs_work_waiting_to_call_a_still_loop_stalled() -> None:
    clock = FakeClock()
    backlog = [0]
    progress = [0]
    health = Health(
        stall_s=5, progress=lambda: progress[0], backlog=lambda: backlog[0], clock=clock
    )
    clock.now += 100
    assert health.live()[0], "idle for long: no work, no stall"
    backlog[0] = 3
    assert health.live()[0], "the stall counts from when work appeared"
    clock.now += 6
    assert not health.live()[0]
    progress[0] += 1
    assert health.live()[0]


# --- metrics -----------------------------------------------------------------------------


def test_the_scorer_counts_what_it_wrote(
    broker: MemoryBroker, running: tuple[Running, FakeClock]
) -> None:
    run, _ = running
    broker.produce(TOPICS.models, model().to_bytes(), key=b"multivariate")
    publish_points(broker, 120, bad=3)
    run.start()
    wait_for(lambda: run.scorer.stats.points == 123)
    wait_for(lambda: bool(broker.records(TOPICS.scores)))
    run.telemetry.watch.poll()
    found = run.metrics()
    written = len(broker.records(TOPICS.predictions))
    assert written == 120
    assert found["streamscore_predictions_total{service=scorer}"] == written
    assert found["streamscore_points_total{service=scorer}"] == 123
    dead = len(broker.records(TOPICS.deadletter))
    assert found["streamscore_deadletters_total{reason=wrong_width,service=scorer}"] == dead == 3
    assert found["streamscore_serving_model{model=multivariate,version=1}"] == 1
    assert "streamscore_rolling_rmse{model=multivariate,version=1}" in found
    assert found["streamscore_build_info{service=scorer,version=" + _version(found) + "}"] == 1
    lag = sum(v for k, v in found.items() if k.startswith("streamscore_consumer_lag{"))
    assert lag == 0 and any("group=streamscore-scorer," in k for k in found)
    assert found["streamscore_health{probe=live}"] == 1


def _version(found: dict[str, float]) -> str:
    (key,) = [k for k in found if k.startswith("streamscore_build_info")]
    return key.rsplit("version=", 1)[1].rstrip("}")


def test_reason_classes_are_few_and_never_the_text() -> None:
    assert reason_class("expected 3 features, got 1 (model 'm' v1)") == "wrong_width"
    assert reason_class("field 'x': expected 2 features like the stream, got 3") == "wrong_width"
    assert reason_class("RecordTooLargeError: an output of 2 MB") == "too_large"
    assert reason_class("some message nobody foresaw 12345") == OTHER_REASON
    names = {name for name, _ in REASON_CLASSES} | {OTHER_REASON}
    assert {reason_class(f"reason {i}") for i in range(100)} <= names


# --- the endpoint --------------------------------------------------------------------------


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_endpoint_serves_metrics_and_both_probes() -> None:
    clock = FakeClock()
    backlog = [5]
    health = Health(stall_s=10, progress=lambda: 0, backlog=lambda: backlog[0], clock=clock)
    from core.telemetry import BuildInfo

    server = TelemetryServer(registry_of(BuildInfo("scorer")), health, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        status, text = get(base + "/metrics")
        assert status == 200 and 'streamscore_build_info{service="scorer"' in text
        assert get(base + "/health/live")[0] == 200
        clock.now += 11
        status, body = get(base + "/health/live")
        assert status == 503 and json.loads(body)["status"] == "failing"
        assert get(base + "/health/ready")[0] == 200
        assert get(base + "/nope")[0] == 404
    finally:
        server.close()
