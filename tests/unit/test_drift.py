"""Drift: the Page-Hinkley test, forgetting least squares, and how a regressor reacts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import ModelError
from regressors import MultivariateRegressor, PolynomialRegressor, Regressor
from regressors.drift import PageHinkley

Array = np.ndarray


def _regimes(
    n: int, seed: int, drift_at: int | None = None, noise: float = 0.1
) -> tuple[Array, Array]:
    """y = 1 + 2 x0 - 3 x1 + 0.5 x0^3 + noise, and after ``drift_at`` another function."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (n, 2))
    y = 1.0 + 2.0 * x[:, 0] - 3.0 * x[:, 1] + 0.5 * x[:, 0] ** 3
    if drift_at is not None:
        after = -1.0 - x[:, 0] + 2.0 * x[:, 1] + 0.3 * x[:, 1] ** 2
        y = np.where(np.arange(n) >= drift_at, after, y)
    return x, y + rng.normal(scale=noise, size=n)


# --- Page-Hinkley -----------------------------------------------------------------------


def test_page_hinkley_follows_the_recursion_river_uses() -> None:
    ph = PageHinkley(min_instances=3, delta=0.5, threshold=2.0, alpha=0.9)
    mean = total = 0.0
    low = float("inf")
    for n, x in enumerate([0.0, 1.0, 0.0, 5.0, 6.0, 7.0], start=1):
        mean += (x - mean) / n
        total = 0.9 * total + (x - mean) - 0.5
        low = min(low, total)
        fired = ph.update(x)
        assert (ph.mean, ph.sum, ph.min) == pytest.approx((mean, total, low))
        assert fired == (n >= 3 and total - low > 2.0)
        if fired:
            break
    assert ph.drift_detected and ph.drifts == 1
    ph.update(0.0)  # the value after a drift starts over
    assert (ph.n, ph.drift_detected) == (1, False)


def test_update_many_is_update_in_a_loop_whatever_the_split() -> None:
    rng = np.random.default_rng(5)
    values = np.concatenate([np.abs(rng.normal(size=3000)), 3.0 * np.abs(rng.normal(size=500))])
    one = PageHinkley()
    fired = [i for i, v in enumerate(values) if one.update(float(v))]
    many = PageHinkley()
    found, start = [], 0
    cuts = [*sorted(rng.choice(len(values), 40, replace=False).tolist()), len(values)]
    for cut in cuts:
        while start < cut:
            start += many.update_many(values[start:cut])
            if many.drift_detected:
                found.append(start - 1)
    assert fired and found == fired
    assert (many.n, many.drifts) == (one.n, one.drifts)
    assert many.sum == pytest.approx(one.sum, abs=1e-9)


def test_no_drift_on_a_stationary_stream_of_100000_points() -> None:
    ph = PageHinkley()
    rng = np.random.default_rng(11)
    values = np.abs(rng.normal(size=100_000))
    assert ph.update_many(values / np.sqrt(np.mean(values**2))) == 100_000
    assert ph.drifts == 0


def test_bad_settings_and_states_are_refused() -> None:
    with pytest.raises(ModelError, match="threshold > 0"):
        PageHinkley(threshold=0.0)
    with pytest.raises(ModelError, match="bad drift detector state"):
        PageHinkley().load({"n": -1, "mean": 0.0, "sum": 0.0, "min": None, "drifts": 0}, "x")


# --- forgetting least squares -----------------------------------------------------------


def test_forgetting_is_exact_weighted_least_squares_in_any_chunking() -> None:
    x, y = _regimes(3000, seed=1)
    lam = 0.999
    weights = np.sqrt(lam ** np.arange(len(y) - 1, -1, -1))
    design = np.column_stack([np.ones(len(y)), x])
    want = np.linalg.lstsq(design * weights[:, None], y * weights, rcond=None)[0]
    for chunk in (1, 7, 500, 3000):
        model = MultivariateRegressor(forget=lam)
        for i in range(0, len(y), chunk):
            model.partial_fit(x[i : i + chunk], y[i : i + chunk])
        np.testing.assert_allclose([model.intercept, *model.coef], want, rtol=0, atol=1e-9)


def test_streams_forget_on_their_own_so_interleaving_does_not_matter() -> None:
    x, y = _regimes(4000, seed=2)
    parts = [(p, x[p::3], y[p::3]) for p in range(3)]
    models = []
    for order in ([0, 1, 2], [2, 0, 1]):
        model = PolynomialRegressor(3, forget=0.999, detect=True)
        for start in range(0, 1400, 350):
            for p in order:
                _, xp, yp = parts[p]
                model.partial_fit(xp[start : start + 350], yp[start : start + 350], stream=p)
        models.append(model)
    a, b = models
    assert a.n_seen == b.n_seen == 4000
    np.testing.assert_allclose(a.coef, b.coef, rtol=0, atol=1e-9)
    assert a.intercept == pytest.approx(b.intercept, abs=1e-9)


def test_forget_and_window_exclude_each_other_and_detect_needs_forget() -> None:
    with pytest.raises(ModelError, match="exclude each other"):
        MultivariateRegressor(window=10, forget=0.99)
    with pytest.raises(ModelError, match="detect needs forget"):
        MultivariateRegressor(detect=True)
    with pytest.raises(ModelError, match=r"\(0, 1\]"):
        MultivariateRegressor(forget=1.5)


# --- reacting to a drift ----------------------------------------------------------------


def _fit_in_batches(model: Regressor, x: Array, y: Array, batch: int) -> list[int]:
    """Feed the rows in batches; the row counts at which drifts were found."""
    found = []
    for i in range(0, len(y), batch):
        before = model.drifts
        model.partial_fit(x[i : i + batch], y[i : i + batch])
        if model.drifts > before:
            found.append(i + batch)
    return found


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_an_abrupt_drift_is_found_within_100_points_and_the_model_follows(seed: int) -> None:
    x, y = _regimes(8000, seed=seed, drift_at=5000, noise=0.1)
    model = PolynomialRegressor(3, forget=0.9995, detect=True)
    found = _fit_in_batches(model, x, y, batch=10)
    assert found and 5000 < found[0] <= 5100, found
    # 3000 points on: predictions of the new regime as good as the noise allows
    xt, yt = _regimes(2000, seed=seed + 100, drift_at=0, noise=0.0)
    rmse = float(np.sqrt(np.mean((model.predict(xt) - yt) ** 2)))
    assert rmse < 0.05


def test_a_drift_between_streams_is_found_and_the_old_streams_are_forgotten() -> None:
    """Streams filled one at a time (a sticky partitioner): none changes on its own."""
    x, y = _regimes(6000, seed=8, drift_at=3000, noise=0.1)
    model = PolynomialRegressor(3, forget=0.9995, detect=True)
    found = []
    for i in range(0, 6000, 20):
        before = model.drifts
        model.partial_fit(x[i : i + 20], y[i : i + 20], stream=i // 1000)
        if model.drifts > before:
            found.append(i + 20)
    assert found and 3000 < found[0] <= 3100, found
    xt, yt = _regimes(2000, seed=108, drift_at=0, noise=0.0)
    assert float(np.sqrt(np.mean((model.predict(xt) - yt) ** 2))) < 0.05


def test_a_cumulative_model_does_not_follow_the_same_drift() -> None:
    """What the defaults fix: without forgetting the old regime outweighs the new one."""
    x, y = _regimes(8000, seed=3, drift_at=5000, noise=0.1)
    model = PolynomialRegressor(3).partial_fit(x, y)
    xt, yt = _regimes(2000, seed=103, drift_at=0, noise=0.0)
    assert float(np.sqrt(np.mean((model.predict(xt) - yt) ** 2))) > 0.5


@pytest.mark.parametrize("noise", ["normal", "student-t3"])
def test_no_drift_is_found_on_100000_stationary_points(noise: str) -> None:
    rng = np.random.default_rng(21)
    x = rng.uniform(-1.0, 1.0, (100_000, 2))
    e = rng.normal(size=100_000) if noise == "normal" else rng.standard_t(3, size=100_000)
    y = 1.0 + 2.0 * x[:, 0] - 3.0 * x[:, 1] + 0.5 * x[:, 0] ** 3 + 0.1 * e
    for model in (
        PolynomialRegressor(3, forget=0.9995, detect=True),
        MultivariateRegressor(forget=0.9995, detect=True),
    ):
        assert _fit_in_batches(model, x, y, batch=997) == []


def test_state_round_trip_mid_stream_resumes_exactly_across_a_drift() -> None:
    x, y = _regimes(9000, seed=6, drift_at=6000)
    whole = PolynomialRegressor(3, forget=0.9995, detect=True)
    _fit_in_batches(whole, x, y, batch=300)
    first = PolynomialRegressor(3, forget=0.9995, detect=True)
    _fit_in_batches(first, x[:5900], y[:5900], batch=300)
    state = json.loads(json.dumps(first.state_dict()))  # plain JSON numbers
    again = Regressor.from_state_dict(state)
    _fit_in_batches(again, x[5900:], y[5900:], batch=450)
    assert whole.drifts >= 1 and again.drifts == whole.drifts
    assert again.params() == whole.params()
    np.testing.assert_allclose(again.coef, whole.coef, rtol=0, atol=1e-9)
    assert again.intercept == pytest.approx(whole.intercept, abs=1e-9)


def test_a_damaged_forgetting_state_is_refused() -> None:
    x, y = _regimes(600, seed=7)
    state = MultivariateRegressor(forget=0.999, detect=True).partial_fit(x, y).state_dict()
    state["streams"][0]["r"] = state["streams"][0]["r"][:-1]
    with pytest.raises(ModelError, match="'r' must be a list of 4 rows"):
        Regressor.from_state_dict(state)
