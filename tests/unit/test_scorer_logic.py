"""The scorer's pure logic: registry, serving policy, scoreboard, requests."""

from __future__ import annotations

import numpy as np
import pytest

from bus.messages import InferRequest, ModelVersion
from core.errors import ModelError
from regressors import MultivariateRegressor, PolynomialRegressor, Regressor
from scorer.policy import ServingPolicy
from scorer.quality import Scoreboard
from scorer.registry import LiveModel, ModelRegistry, load_model
from scorer.requests import answer


def fitted(kind: str = "multivariate", slope: float = 2.0) -> Regressor:
    x = np.random.default_rng(0).uniform(-1, 1, (40, 2))
    y = slope * x[:, 0] - x[:, 1] + 0.5
    model = MultivariateRegressor() if kind == "multivariate" else PolynomialRegressor(degree=2)
    return model.fit(x, y)


def message(name: str, version: int, regressor: Regressor, rmse: float = 0.1) -> ModelVersion:
    return ModelVersion(
        name=name,
        version=version,
        kind=regressor.kind,  # type: ignore[arg-type]
        n_features=2,
        params=regressor.to_dict(),
        trained_on={"count": 40},
        train_score={"r2": 0.9, "rmse": rmse, "mae": rmse},
        created_at=0,
    )


def live(name: str, version: int = 1, rmse: float = 0.1) -> LiveModel:
    return load_model(message(name, version, fitted(), rmse))


# --- registry -----------------------------------------------------------------------


def test_registry_keeps_latest_and_ignores_older_versions() -> None:
    registry = ModelRegistry(history=2)
    assert registry.add(live("m", 1))
    assert registry.add(live("m", 3))
    assert not registry.add(live("m", 2)), "an older version must not replace a newer one"
    assert registry.latest()["m"].version == 3
    assert registry.add(live("m", 4))
    assert registry.get("m", 4) is not None and registry.get("m", 3) is not None
    assert registry.get("m", 1) is None, "history is bounded"
    registry.remove("m")
    assert registry.get("m") is None


def test_load_model_rejects_inconsistent_messages() -> None:
    good = message("m", 1, fitted())
    bad_kind = ModelVersion(**{**good.to_json(), "kind": "polynomial"})
    with pytest.raises(ModelError, match="kind is 'polynomial' but params are 'multivariate'"):
        load_model(bad_kind)
    bad_width = ModelVersion(**{**good.to_json(), "n_features": 3})
    with pytest.raises(ModelError, match="n_features is 3"):
        load_model(bad_width)
    bad_params = ModelVersion(**{**good.to_json(), "params": {**good.params, "coef": [1.0]}})
    with pytest.raises(ModelError):
        load_model(bad_params)


# --- policy and scoreboard -------------------------------------------------------------


def scored(board: Scoreboard, model: LiveModel, error: float, n: int = 200) -> None:
    y = np.zeros(n)
    board.update(model, y, y + error)


def test_best_policy_starts_with_lowest_training_rmse_and_switches_with_hysteresis() -> None:
    a, b = live("a", rmse=0.5), live("b", rmse=0.2)
    models = {"a": a, "b": b}
    policy = ServingPolicy("best", hysteresis=0.1, min_scored=100)
    board = Scoreboard(window=200, every=10, interval_s=1.0, now=0.0)
    assert policy.serving(models) is b

    scored(board, b, 1.0)
    scored(board, a, 0.95)  # better, but within the 10% hysteresis
    policy.review(models, board)
    assert policy.serving(models) is b, "no flapping on a small difference"

    scored(board, a, 0.5)
    policy.review(models, board)
    assert policy.serving(models) is a


def test_new_version_of_champion_serves_at_once_and_keeps_the_seat() -> None:
    policy = ServingPolicy("best", hysteresis=0.1, min_scored=100)
    board = Scoreboard(window=200, every=10, interval_s=1.0, now=0.0)
    a1, b = live("a", 1, rmse=0.1), live("b", rmse=0.5)
    assert policy.serving({"a": a1, "b": b}) is a1
    a2 = live("a", 2, rmse=0.1)
    scored(board, b, 0.01)  # b is scored, a2 not yet: no switch on an unscored champion
    policy.review({"a": a2, "b": b}, board)
    assert policy.serving({"a": a2, "b": b}) is a2


def test_fixed_policy_holds_until_its_model_exists() -> None:
    policy = ServingPolicy("poly")
    assert policy.serving({"a": live("a")}) is None
    poly = live("poly")
    assert policy.serving({"a": live("a"), "poly": poly}) is poly


def test_scoreboard_publication_schedule_and_exact_values() -> None:
    board = Scoreboard(window=4, every=3, interval_s=10.0, now=0.0)
    model = live("m")
    assert not board.due(1.0)
    board.update(model, np.array([1.0, 2.0]), np.array([1.5, 2.0]))
    board.labelled(2)
    assert not board.due(1.0)
    board.update(model, np.array([3.0, 4.0, 5.0]), np.array([3.0, 4.0, 4.0]))
    board.labelled(3)
    assert board.due(1.0)
    (score,) = board.publish(1.0)
    # the window holds the last 4: errors 0, 0, 0, 1 over y = 2, 3, 4, 5
    assert score.count == 4
    assert score.mae == pytest.approx(0.25)
    assert score.rmse == pytest.approx(0.5)
    assert score.r2 == pytest.approx(1 - 1.0 / 5.0)
    assert not board.due(2.0)
    board.labelled(1)
    assert board.due(11.5), "the interval also triggers a publication"


# --- requests ---------------------------------------------------------------------------


def test_answer_statuses() -> None:
    registry = ModelRegistry()
    model = live("m")
    registry.add(model)
    ok = answer(InferRequest("1", [[1.0, 2.0]], "m"), registry, lambda: model)
    assert ok.status == 200 and ok.version == 1
    assert ok.predictions == pytest.approx([2 * 1.0 - 2.0 + 0.5])
    assert answer(InferRequest("2", [[1.0, 2.0]], "x"), registry, lambda: model).status == 404
    assert answer(InferRequest("3", [[1.0, 2.0]], "m", 7), registry, lambda: model).status == 404
    wrong = answer(InferRequest("4", [[1.0]], "m"), registry, lambda: model)
    assert wrong.status == 400 and "expected 2 features, got 1" in (wrong.error or "")
    assert answer(InferRequest("5", [[1.0, 2.0]]), registry, lambda: None).status == 503
