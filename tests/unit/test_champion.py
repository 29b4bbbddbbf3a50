"""A fair champion: every version judged on the same window; a better one serves at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from bus.clients.memory import MemoryBroker
from bus.messages import ModelVersion, Point, Prediction, Score
from bus.topics import Topics
from core.errors import MessageError
from core.shutdown import StopFlag
from regressors import MultivariateRegressor, PolynomialRegressor
from scorer.config import ScorerConfig
from scorer.policy import ServingPolicy
from scorer.quality import Scoreboard
from scorer.registry import LiveModel, load_model
from scorer.service import Scorer

TOPICS = Topics()
TRUE = np.array([0.5, 2.0, -1.0])  # intercept, then the coefficients of x0, x1


def version(name: str, number: int, coef: list[float], train_rmse: float = 0.1) -> ModelVersion:
    regressor = MultivariateRegressor().fit(np.eye(2), np.zeros(2))
    params = {**regressor.to_dict(), "intercept": coef[0], "coef": coef[1:]}
    return ModelVersion(
        name=name,
        version=number,
        kind="multivariate",
        n_features=2,
        params=params,
        trained_on={"count": 100},
        train_score={"r2": 0.9, "rmse": train_rmse, "mae": train_rmse},
        created_at=0,
    )


def labelled_points(n: int, seed: int, noise: float) -> list[bytes]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 2))
    y = TRUE[0] + x @ TRUE[1:] + rng.normal(scale=noise, size=n)
    return [Point(f"s{seed}-{i}", x[i].tolist(), float(y[i])).to_bytes() for i in range(n)]


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker()
    for name in ("points", "predictions", "requests", "replies"):
        broker.create_topic(getattr(TOPICS, name), 1)
    for name in ("models", "scores", "deadletter", "trainer_state"):
        broker.create_topic(getattr(TOPICS, name), 1)
    return broker


@pytest.fixture
def scorer(broker: MemoryBroker) -> Iterator[Scorer]:
    stop = StopFlag()
    config = ScorerConfig(transactional_id="tx", scores_interval_s=0.2, max_batch=200)
    service = Scorer(broker.driver(), TOPICS, config, stop=stop, retry_s=30.0, model_key=None)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    yield service
    stop.set()
    thread.join(timeout=20)
    assert not thread.is_alive()


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def predictions(broker: MemoryBroker) -> list[Prediction]:
    return [Prediction.from_bytes(r.value) for r in broker.records(TOPICS.predictions)]


def send(broker: MemoryBroker, topic: str, values: list[bytes], key: bytes | None = None) -> None:
    producer = broker.driver().producer()
    for value in values:
        producer.send(topic, value, key=key)
    producer.flush()


def test_a_clearly_better_new_version_serves_within_a_second(
    broker: MemoryBroker, scorer: Scorer
) -> None:
    send(broker, TOPICS.models, [version("rough", 1, [0.4, 1.5, -0.5]).to_bytes()], b"rough")
    send(broker, TOPICS.points, labelled_points(1200, seed=1, noise=0.05))
    wait_for(lambda: len(predictions(broker)) == 1200)
    assert {p.model for p in predictions(broker)} == {"rough"}
    send(broker, TOPICS.models, [version("exact", 1, TRUE.tolist(), 0.5).to_bytes()], b"exact")
    arrived = time.monotonic()
    # points keep coming, one at a time: the first answered by the new model tells when
    producer = broker.driver().producer()
    sent = 0
    for value in labelled_points(400, seed=2, noise=0.05):
        sent += 1
        producer.send(TOPICS.points, value)
        producer.flush()
        time.sleep(0.005)
        served = [p for p in predictions(broker)[1200:] if p.model == "exact"]
        if served:
            break
    assert served, "the better model never served"
    took = time.monotonic() - arrived
    assert took < 1.0, f"the better model took {took:.2f} s ({sent} points) to serve"
    assert sent < 50, f"the better model waited for {sent} points (min_scored is 100)"


def test_identical_models_never_switch_even_when_the_noise_changes(
    broker: MemoryBroker, scorer: Scorer
) -> None:
    send(broker, TOPICS.models, [version("first", 1, TRUE.tolist(), 0.1).to_bytes()], b"first")
    send(broker, TOPICS.points, labelled_points(900, seed=3, noise=1.0))  # a noisy stretch
    wait_for(lambda: len(predictions(broker)) == 900)
    send(broker, TOPICS.models, [version("twin", 1, TRUE.tolist(), 0.1).to_bytes()], b"twin")
    time.sleep(0.3)
    send(broker, TOPICS.points, labelled_points(1500, seed=4, noise=0.05))  # a quiet one
    wait_for(lambda: len(predictions(broker)) == 2400)
    assert {p.model for p in predictions(broker)} == {"first"}
    assert scorer.step.policy.champion == "first"


# --- the scoreboard on its own -----------------------------------------------------------


def live(name: str, number: int, coef: list[float]) -> LiveModel:
    return load_model(version(name, number, coef), key=None)


def test_a_new_version_is_scored_on_exactly_the_champions_window() -> None:
    board = Scoreboard(window=300, every=10_000, interval_s=1e9, now=0.0)
    champion = live("a", 1, TRUE.tolist())
    rng = np.random.default_rng(5)
    for _ in range(7):
        x = rng.uniform(-1, 1, (100, 2))
        y = TRUE[0] + x @ TRUE[1:] + rng.normal(scale=0.3, size=100)
        board.update(champion, y, champion.predict(x))
        board.remember(x, y)
    twin = live("b", 4, TRUE.tolist())
    assert board.backfill([champion, twin]) == [twin]
    assert board.rmse(twin)[0] == board.rmse(champion)[0] == 300
    assert board.rmse(twin)[1] == pytest.approx(board.rmse(champion)[1], rel=1e-12)
    policy = ServingPolicy(hysteresis=0.05, min_scored=100)
    policy.champion = "a"
    policy.review({"a": champion, "b": twin}, board)
    assert policy.champion == "a"
    better = live("c", 1, [0.0, 0.0, 0.0])  # worse, in fact: predicts 0
    board.backfill([better])
    policy.review({"a": champion, "b": twin, "c": better}, board)
    assert policy.champion == "a"


def test_the_scorer_reports_a_drift_on_the_scores_of_the_version_that_meets_it() -> None:
    board = Scoreboard(window=500, every=100, interval_s=1e9, now=0.0)
    model = live("m", 1, TRUE.tolist())
    rng = np.random.default_rng(6)

    def batch(shift: float, now: float) -> None:
        x = rng.uniform(-1, 1, (50, 2))
        y = TRUE[0] + x @ TRUE[1:] + shift + rng.normal(scale=0.1, size=50)
        board.update(model, y, model.predict(x), now)

    for i in range(40):
        batch(0.0, now=float(i))
    calm = board.publish(40.0)
    assert [s.drift for s in calm] == [False] and calm[0].drifts == 0
    assert "drift" not in Score.from_bytes(calm[0].to_bytes()).to_json()
    for i in range(3):
        batch(1.0, now=100.0 + i)  # the relation moved by 10 noise levels
    found = board.publish(103.0)[0]
    assert found.drift and found.drifts >= 1 and found.drift_at == 100_000
    again = Score.from_bytes(found.to_bytes())
    assert (again.drift, again.drift_at, again.drifts) == (True, 100_000, found.drifts)
    assert board.publish(104.0)[0].drift is False  # reported once


def test_no_drift_is_reported_on_100000_stationary_points() -> None:
    board = Scoreboard(window=1000, every=10**9, interval_s=1e9, now=0.0)
    model = live("m", 1, TRUE.tolist())
    rng = np.random.default_rng(7)
    for _ in range(100):
        x = rng.uniform(-1, 1, (1000, 2))
        y = TRUE[0] + x @ TRUE[1:] + rng.normal(scale=0.1, size=1000)
        board.update(model, y, model.predict(x), 0.0)
    assert board.drifts(model) == 0


def test_a_score_with_a_drift_field_of_the_wrong_type_is_refused() -> None:
    good = Score("m", 1, 10, 10, None, 0.1, 0.1, 0, drift=True, drift_at=5, drifts=1)
    raw = good.to_bytes().replace(b'"drift":true', b'"drift":"yes"')
    with pytest.raises(MessageError, match="expected true or false"):
        Score.from_bytes(raw)
    old = Score.from_bytes(
        b'{"model":"m","version":1,"window":10,"count":1,"r2":null,'
        b'"rmse":null,"mae":null,"ts":0,"future":1}'
    )
    assert (old.drift, old.drift_at, old.drifts) == (False, None, 0)


def test_the_first_champion_is_not_an_over_fitted_model_with_a_lower_training_rmse() -> None:
    """A cubic of 6 features (84 coefficients) on 40 points vs a line on the same points."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (40, 6))
    y = x @ np.arange(1.0, 7.0) + rng.normal(scale=0.5, size=40)
    cubic = PolynomialRegressor(3).fit(x, y)
    line = MultivariateRegressor().fit(x, y)
    over = LiveModel("cubic", 1, "polynomial", 6, 0.01, cubic, trained_count=40)
    fair = LiveModel("line", 1, "multivariate", 6, 0.5, line, trained_count=40)
    assert not over.supported and fair.supported
    assert ServingPolicy().serving({"cubic": over, "line": fair}) is fair
    # alone, it serves (better than holding every point); with enough points it competes
    assert ServingPolicy().serving({"cubic": over}) is over
    enough = LiveModel("cubic", 2, "polynomial", 6, 0.01, cubic, trained_count=168)
    assert ServingPolicy().serving({"cubic": enough, "line": fair}) is enough


def test_a_loaded_version_knows_how_many_points_it_was_trained_on() -> None:
    model = load_model(version("lin", 1, [0.5, 2.0, -1.0]), key=None)
    assert model.trained_count == 100 and model.supported
