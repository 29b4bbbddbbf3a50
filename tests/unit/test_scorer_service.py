"""The scorer built without a broker: the in-memory driver under its two stream kernels."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import pytest

from bus.clients.base import FencedError, Record, TransientBusError
from bus.clients.memory import MemoryBroker
from bus.messages import InferReply, InferRequest, ModelVersion, Point, Prediction
from bus.reply import ReplyAddress
from bus.signing import ModelKey, sign
from bus.topics import Topics
from core.errors import BusError
from core.shutdown import StopFlag
from regressors import MultivariateRegressor
from scorer.config import ScorerConfig
from scorer.service import Scorer

TOPICS = Topics()


def linear(
    version: int,
    name: str = "multivariate",
    target: Callable[[np.ndarray], np.ndarray] = lambda x: 2 * x[:, 0] - x[:, 1] + 0.5,
) -> ModelVersion:
    """A multivariate model fitted on 50 points of ``target`` (3 features)."""
    xs = np.random.default_rng(version).uniform(-1, 1, (50, 3))
    regressor = MultivariateRegressor().fit(xs, target(xs))
    return ModelVersion(
        name=name,
        version=version,
        kind="multivariate",
        n_features=3,
        params=regressor.to_dict(),
        trained_on={"count": 50},
        train_score={"r2": 1.0, "rmse": 0.0, "mae": 0.0},
        created_at=0,
    )


def points(n: int, start: int = 0) -> list[bytes]:
    rng = np.random.default_rng(start)
    return [
        Point(f"p{i}", rng.uniform(-1, 1, 3).tolist(), float(i % 7)).to_bytes()
        for i in range(start, start + n)
    ]


def scorer_broker() -> MemoryBroker:
    """An in-memory broker with the topics a scorer reads and writes."""
    broker = MemoryBroker()
    for name in ("points", "predictions", "requests"):
        broker.create_topic(getattr(TOPICS, name), 2)
    for name in ("models", "scores", "deadletter", "trainer_state"):
        broker.create_topic(getattr(TOPICS, name), 1)
    broker.create_topic(TOPICS.replies, 4)
    return broker


@pytest.fixture
def broker() -> MemoryBroker:
    return scorer_broker()


class Running:
    """A scorer running in a thread on the memory broker."""

    def __init__(
        self, broker: MemoryBroker, model_key: ModelKey | None = None, **config: object
    ) -> None:
        base = ScorerConfig(transactional_id="tx-scorer", scores_interval_s=0.2)
        self.stop = StopFlag()
        self.scorer = Scorer(
            broker.driver(),
            TOPICS,
            replace(base, **config),  # type: ignore[arg-type]
            stop=self.stop,
            retry_s=30.0,
            model_key=model_key,
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.scorer.run()
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive(), "the scorer did not stop"


@pytest.fixture
def run(broker: MemoryBroker) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(model_key: ModelKey | None = None, **config: object) -> Running:
        running = Running(broker, model_key, **config)
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def predicted(broker: MemoryBroker) -> list[Prediction]:
    return [Prediction.from_bytes(r.value) for r in broker.records(TOPICS.predictions)]


def deadletters(broker: MemoryBroker) -> list[Record]:
    return broker.records(TOPICS.deadletter)


def publish(broker: MemoryBroker, values: list[bytes], key: bytes | None = None) -> None:
    for value in values:
        broker.produce(TOPICS.points, value, key=key)


def test_holds_without_a_model_then_predicts_every_point(
    broker: MemoryBroker, run: Callable[..., Running]
) -> None:
    publish(broker, points(300))
    running = run()
    time.sleep(0.5)
    assert predicted(broker) == [], "no model yet: the scorer must hold"
    broker.produce(TOPICS.models, linear(1).to_bytes(), key=b"multivariate")
    wait_for(lambda: len(predicted(broker)) == 300)
    assert {p.id for p in predicted(broker)} == {f"p{i}" for i in range(300)}
    assert {p.version for p in predicted(broker)} == {1}
    committed = broker.committed_offsets(ScorerConfig().group_id)
    wait_for(lambda: sum(broker.committed_offsets(ScorerConfig().group_id).values()) == 300)
    assert committed is not None
    running.close()
    assert running.error is None


@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_a_transient_fault_is_ridden_through_and_nothing_is_lost(
    broker: MemoryBroker, run: Callable[..., Running], delivery: str
) -> None:
    broker.produce(TOPICS.models, linear(1).to_bytes(), key=b"multivariate")
    fault = "commit_transaction" if delivery == "exactly-once" else "flush"
    broker.fail_next(fault, TransientBusError("the broker went away"), times=3)
    publish(broker, points(500))
    running = run(delivery=delivery)
    publish(broker, points(500, start=500))  # more rounds after the faults fire
    wait_for(lambda: broker.pending_faults(fault) == 0)
    wait_for(lambda: {p.id for p in predicted(broker)} == {f"p{i}" for i in range(1000)})
    if delivery == "exactly-once":
        counts = Counter(p.id for p in predicted(broker))
        assert max(counts.values()) == 1, "exactly-once: one committed prediction per point"
    running.close()
    assert running.error is None


def test_fenced_by_another_instance_stops_with_a_clear_error(
    broker: MemoryBroker, run: Callable[..., Running]
) -> None:
    broker.produce(TOPICS.models, linear(1).to_bytes(), key=b"multivariate")
    broker.fail_next("commit_transaction", FencedError("fenced"))
    publish(broker, points(10))
    running = run(delivery="exactly-once")
    running.thread.join(timeout=15)
    assert isinstance(running.error, BusError)
    assert "tx-scorer" in str(running.error)


def test_poison_points_are_dead_lettered_and_the_rest_predicted(
    broker: MemoryBroker, run: Callable[..., Running]
) -> None:
    broker.produce(TOPICS.models, linear(1).to_bytes(), key=b"multivariate")
    good = points(50)
    bad = [
        b'{"id": "huge", "x": [1e40, 0.5, 0.5], "y": 1.0}',
        b'{"id":"smug-1","y":1.0',  # half of a point ...
        b'"x":[0.1,0.2,0.3]}',  # ... and its other half
        b'{"id": "a", "x": [1, 2, 3]}{"id": "b", "x": [1, 2, 3]}',  # two objects in one value
        b'{"id": "narrow", "x": [1, 2]}',  # not the model's width
        b"not json",
    ]
    publish(broker, good[:25] + bad + good[25:])
    running = run()
    wait_for(lambda: len(predicted(broker)) == 50 and len(deadletters(broker)) == len(bad))
    assert {r.value for r in deadletters(broker)} == set(bad)
    reasons = {r.value: dict(r.headers)["error"].decode() for r in deadletters(broker)}
    assert "1e+12" in reasons[bad[0]] or "1e12" in reasons[bad[0]]
    assert "expected 3 features, got 2" in reasons[bad[4]]
    running.close()
    assert running.error is None


def test_a_model_with_huge_coefficients_is_refused(
    broker: MemoryBroker, run: Callable[..., Running]
) -> None:
    broker.produce(TOPICS.models, linear(1).to_bytes(), key=b"multivariate")
    huge = linear(2).to_json()
    huge["params"]["coef"] = [1e308, 1e308, 1e308]
    import json

    broker.produce(TOPICS.models, json.dumps(huge).encode(), key=b"multivariate")
    publish(broker, points(20))
    running = run()
    wait_for(lambda: len(predicted(broker)) == 20)
    assert {p.version for p in predicted(broker)} == {1}
    assert [r.value for r in deadletters(broker)] == [json.dumps(huge).encode()]
    running.close()
    assert running.error is None


def request_headers(**override: bytes) -> list[tuple[str, bytes]]:
    headers = dict(ReplyAddress("c1", TOPICS.replies, 1).request_headers())
    headers.update(override)
    return [(k, v) for k, v in headers.items() if v]


def test_requests_are_answered_and_bad_addresses_dead_lettered(
    broker: MemoryBroker, run: Callable[..., Running]
) -> None:
    broker.produce(TOPICS.models, linear(1).to_bytes(), key=b"multivariate")
    body = InferRequest("c1", [[0.5, -0.25, 1.0]]).to_bytes()
    bad = {
        "no headers": [],
        "partition abc": request_headers(**{"reply-partition": b"abc"}),
        "partition 99": request_headers(**{"reply-partition": b"99"}),
        "topic points": request_headers(**{"reply-topic": TOPICS.points.encode()}),
        "unknown topic": request_headers(**{"reply-topic": b"nowhere"}),
    }
    for headers in bad.values():
        broker.produce(TOPICS.requests, body, headers=headers)
    broker.produce(TOPICS.requests, body, headers=request_headers())
    running = run()
    wait_for(lambda: len(broker.records(TOPICS.replies)) == 1)
    wait_for(lambda: len(deadletters(broker)) == len(bad))
    reply = broker.records(TOPICS.replies)[0]
    assert reply.partition == 1
    assert InferReply.from_bytes(reply.value).predictions is not None
    assert broker.records(TOPICS.points) == [], "a request never writes into another topic"
    assert all(b"cannot answer" in dict(r.headers)["error"] for r in deadletters(broker))
    running.close()
    assert running.error is None


def test_with_a_model_key_only_signed_versions_serve(
    broker: MemoryBroker, run: Callable[..., Running]
) -> None:
    key = ModelKey(b"k" * 32)
    forged = replace(sign(linear(3), key), version=9)  # signed, then changed
    broker.produce(TOPICS.models, linear(5).to_bytes(), key=b"multivariate")  # unsigned
    broker.produce(TOPICS.models, forged.to_bytes(), key=b"multivariate")
    broker.produce(TOPICS.models, sign(linear(2), key).to_bytes(), key=b"multivariate")
    publish(broker, points(20))
    running = run(model_key=key)
    wait_for(lambda: len(predicted(broker)) == 20)
    assert {p.version for p in predicted(broker)} == {2}
    reasons = sorted(dict(r.headers)["error"].decode() for r in deadletters(broker))
    assert len(reasons) == 2
    assert "signature does not match" in reasons[0] + reasons[1]
    assert "signature missing" in reasons[0] + reasons[1]
    running.close()
    assert running.error is None
