"""Regressors: one contract checked for every regressor, then what is specific to each."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.messages import MAX_ABS_INPUT, MAX_ABS_PARAM
from core.errors import ModelError
from regressors import (
    MultivariateRegressor,
    PolynomialRegressor,
    Regressor,
    make_regressor,
    n_polynomial_terms,
    polynomial_features,
    polynomial_powers,
    regressor_from_dict,
    regressor_from_state_dict,
)

N_POINTS = 900
N_FEATURES = 3
WINDOW = 300  # more than one block of the window's queue (blocks hold >= 256 points)
CHUNKS = (1, 2, 50, 97, 320)  # then the rest; 320 > WINDOW on purpose


# -- independent references -----------------------------------------------------------------


def reference_design(x: np.ndarray, degree: int) -> np.ndarray:
    """Design matrix written the slow, obvious way: 1, then monomials degree by degree."""
    cols = [np.ones(len(x))]
    for k in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(x.shape[1]), k):
            col = np.ones(len(x))
            for j in combo:
                col = col * x[:, j]
            cols.append(col)
    return np.column_stack(cols)


def lstsq(x: np.ndarray, y: np.ndarray, degree: int) -> np.ndarray:
    solution: np.ndarray = np.linalg.lstsq(reference_design(x, degree), y, rcond=None)[0]
    return solution


def theta(model: Regressor) -> np.ndarray:
    """All coefficients, intercept first."""
    return np.concatenate([[model.intercept], model.coef])


def assert_same_fit(a: np.ndarray, b: np.ndarray, x: np.ndarray, degree: int, tol: float) -> None:
    """Coefficients agree to ``tol`` relative, each weighed by its column's size in the data."""
    scale = np.sqrt(np.mean(reference_design(x, degree) ** 2, axis=0))
    diff = np.max(np.abs(a - b) * scale)
    size = np.max(np.abs(b) * scale)
    assert diff <= tol * size, f"coefficients differ by {diff / size:.2e} relative (> {tol})"


def assert_matches_lstsq(th: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_allclose(th, ref, rtol=1e-6, atol=0)


# -- the regressors under contract ------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    kind: str
    degree: int
    window: int | None

    def make(self) -> Regressor:
        return self._make(self.window)

    def make_cumulative(self) -> Regressor:
        return self._make(None)

    def _make(self, window: int | None) -> Regressor:
        if self.kind == "multivariate":
            return make_regressor("multivariate", window=window)
        return make_regressor("polynomial", degree=self.degree, window=window)

    @property
    def cover(self) -> int:
        """How many of the last points the fit is on."""
        return N_POINTS if self.window is None else self.window

    def __str__(self) -> str:
        deg = "" if self.kind == "multivariate" else f"-deg{self.degree}"
        return f"{self.kind}{deg}-{'cumulative' if self.window is None else 'window'}"


SPECS = [
    Spec(kind, degree, window)
    for kind, degree in [("multivariate", 1), *(("polynomial", d) for d in range(1, 6))]
    for window in (None, WINDOW)
]


def make_data(spec: Spec, seed: int = 0, n: int = N_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Points on [-10, 10]^3; y is one fixed polynomial of the spec's degree plus unit noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-10.0, 10.0, (n, N_FEATURES))
    z = reference_design(x, spec.degree)
    typical = reference_design(np.random.default_rng(99).uniform(-10, 10, (1000, 3)), spec.degree)
    coef = np.random.default_rng(spec.degree).normal(size=z.shape[1])
    coef /= np.sqrt(np.mean(typical**2, axis=0))  # every column contributes alike
    return x, z @ coef + rng.normal(size=n)


def stream(model: Regressor, x: np.ndarray, y: np.ndarray) -> Regressor:
    start = 0
    for size in (*CHUNKS, len(x)):
        model.partial_fit(x[start : start + size], y[start : start + size])
        start += size
    return model


# -- the contract: each check runs for every spec ----------------------------------------------


def check_round_trip(spec: Spec) -> None:
    x, y = make_data(spec)
    model = stream(spec.make(), x, y)
    params = model.to_dict()
    assert params == json.loads(json.dumps(params))
    assert params["kind"] == spec.kind == model.kind
    assert params["n_features"] == N_FEATURES
    assert len(params["coef"]) == reference_design(x[:1], spec.degree).shape[1] - 1
    assert all(type(v) is float for v in [params["intercept"], *params["coef"]])
    if spec.kind == "polynomial":
        assert params["degree"] == spec.degree
    x_new, _ = make_data(spec, seed=1)
    for loaded in (
        regressor_from_dict(json.loads(json.dumps(params))),
        type(model).from_dict(params),
    ):
        assert type(loaded) is type(model)
        assert loaded.is_fitted and not loaded.is_trainable
        assert np.array_equal(loaded.predict(x_new), model.predict(x_new))
        assert loaded.to_dict() == params
        with pytest.raises(ModelError, match="no training statistics"):
            loaded.partial_fit(x[:3], y[:3])


def check_inputs_unchanged(spec: Spec) -> None:
    x, y = make_data(spec)
    x_copy, y_copy = x.copy(), y.copy()
    x.flags.writeable = False  # an in-place write would raise
    y.flags.writeable = False
    model = spec.make().fit(x, y)
    stream(model, x, y)
    model.predict(x)
    model.predict(x[0])
    model.score(x, y)
    model.design(x)
    polynomial_features(x, spec.degree)
    regressor_from_state_dict(model.state_dict()).partial_fit(x, y)
    assert np.array_equal(x, x_copy) and np.array_equal(y, y_copy)
    rows = x_copy[:5].tolist()
    model.fit(rows, y_copy[:5].tolist())
    assert rows == x_copy[:5].tolist()


def check_deterministic(spec: Spec) -> None:
    x, y = make_data(spec)
    a, b = spec.make().fit(x, y), spec.make().fit(x, y)
    assert np.array_equal(theta(a), theta(b))
    assert a.to_dict() == b.to_dict()
    c, d = stream(spec.make(), x, y), stream(spec.make(), x, y)
    assert np.array_equal(theta(c), theta(d))


def check_chunks_equal_fit(spec: Spec) -> None:
    """Streaming in chunks equals one fit on the points covered (the last W in window mode)."""
    x, y = make_data(spec)
    streamed = stream(spec.make(), x, y)
    whole = spec.make_cumulative().fit(x[-spec.cover :], y[-spec.cover :])
    assert streamed.n_seen == N_POINTS
    assert streamed.n_in_window == spec.cover
    assert_same_fit(theta(streamed), theta(whole), x, spec.degree, tol=1e-9)
    fitted = spec.make().fit(x, y)  # fit() honours the window too
    assert_same_fit(theta(fitted), theta(whole), x, spec.degree, tol=1e-9)


def check_agrees_with_lstsq(spec: Spec) -> None:
    """Coefficients match numpy.linalg.lstsq to 1e-6 relative, each one (degree 5: [-10, 10])."""
    x, y = make_data(spec)
    ref = lstsq(x[-spec.cover :], y[-spec.cover :], spec.degree)
    assert_matches_lstsq(theta(stream(spec.make(), x, y)), ref)
    assert_matches_lstsq(theta(spec.make().fit(x, y)), ref)


def check_state_restore(spec: Spec) -> None:
    x, y = make_data(spec)
    first, later = slice(0, 333), [slice(333, 340), slice(340, 700), slice(700, N_POINTS)]
    original = spec.make().fit(x[first], y[first])
    state = json.loads(json.dumps(original.state_dict()))
    restored = regressor_from_state_dict(state)
    assert (restored.kind, restored.params(), restored.n_seen) == (
        spec.kind,
        original.params(),
        333,
    )
    assert np.array_equal(restored.predict(x[:50]), original.predict(x[:50]))
    for part in later:
        original.partial_fit(x[part], y[part])
        restored.partial_fit(x[part], y[part])
        assert_same_fit(theta(restored), theta(original), x, spec.degree, tol=1e-9)
    later_state = original.state_dict()
    if spec.window is None:  # compact: the R factor's upper triangle, not the points
        m = reference_design(x[:1], spec.degree).shape[1] + 1
        assert [len(row) for row in later_state["r"]] == list(range(m, 0, -1))
        assert "x" not in later_state
    else:
        assert len(later_state["x"]) == len(later_state["y"]) == WINDOW
        assert np.array_equal(np.array(later_state["x"]), x[-WINDOW:])
    empty = regressor_from_state_dict(json.loads(json.dumps(spec.make().state_dict())))
    assert not empty.is_fitted
    empty.partial_fit(x, y)
    assert_same_fit(theta(empty), theta(spec.make().fit(x, y)), x, spec.degree, tol=1e-9)


def check_rank_deficient(spec: Spec) -> None:
    """Degenerate data never crashes; fitted values are still the least-squares ones."""
    x, y = make_data(spec)
    n_params = reference_design(x[:1], spec.degree).shape[1]
    duplicate = x.copy()
    duplicate[:, 1] = duplicate[:, 0]
    constant = x.copy()
    constant[:, 2] = 3.0
    cases = {
        "duplicate column": (duplicate, y),
        "constant feature": (constant, y),
        "zero features": (np.zeros_like(x), y),
        "fewer points than coefficients": (x[: max(1, n_params // 2)], y[: max(1, n_params // 2)]),
        "one point": (x[:1], y[:1]),
    }
    for name, (xc, yc) in cases.items():
        for model in (spec.make().fit(xc, yc), stream(spec.make(), xc, yc)):
            cover = min(len(xc), spec.cover)
            xw, yw = xc[-cover:], yc[-cover:]
            z = reference_design(xw, spec.degree)
            expected = z @ np.linalg.lstsq(z, yw, rcond=None)[0]
            fitted = model.predict(xw)
            assert np.isfinite(theta(model)).all(), name
            assert np.isfinite(model.predict(x)).all(), name
            err = np.max(np.abs(fitted - expected)) / max(1.0, np.max(np.abs(yw)))
            assert err < 1e-6, f"{name}: fitted values off by {err:.1e}"
            json.dumps(model.to_dict(), allow_nan=False)


def check_input_errors(spec: Spec) -> None:
    x, y = make_data(spec)
    model = spec.make()
    assert not model.is_fitted and model.n_features is None
    with pytest.raises(ModelError, match="not fitted"):
        model.predict(x)
    with pytest.raises(ModelError, match="not fitted"):
        model.to_dict()
    model.fit(x, y)
    assert model.is_fitted and model.n_features == N_FEATURES
    wider = np.hstack([x, x[:, :1]])
    with pytest.raises(ModelError, match=r"^expected 3 features, got 4$"):
        model.predict(wider)
    with pytest.raises(ModelError, match="expected 3 features, got 4"):
        model.partial_fit(wider, y)
    with pytest.raises(ModelError, match="expected 3 features, got 2"):
        model.predict(x[0, :2])  # a 1-D X is one row
    assert model.predict(x[3]).shape == (1,)
    assert model.predict(x[3])[0] == model.predict(x[3:4])[0]
    bad = x.copy()
    bad[5, 1] = np.nan
    for call in (model.predict, lambda a: model.partial_fit(a, y)):
        with pytest.raises(ModelError, match="NaN or infinity"):
            call(bad)
    with pytest.raises(ModelError, match=f"expected {N_POINTS} values"):
        model.partial_fit(x, y[:-1])
    with pytest.raises(ModelError, match="expected numbers"):
        model.predict([["a", "b", "c"]])
    before = theta(model)
    with pytest.raises(ModelError):
        model.partial_fit(x, np.where(np.arange(len(y)) == 9, np.inf, y))
    assert np.array_equal(theta(model), before)  # a rejected batch changes nothing


def check_score(spec: Spec) -> None:
    x, y = make_data(spec)
    model = spec.make().fit(x, y)
    x_new, y_new = make_data(spec, seed=2, n=300)
    residual = y_new - model.predict(x_new)
    expected = 1.0 - residual @ residual / np.sum((y_new - y_new.mean()) ** 2)
    assert model.score(x_new, y_new) == pytest.approx(expected, rel=1e-12)
    assert 0.5 < model.score(x_new, y_new) < 1.0  # the data are a polynomial plus unit noise
    exact = spec.make().fit(
        x, reference_design(x, spec.degree) @ np.arange(1.0, 100.0)[: model.n_params]
    )
    assert exact.score(
        x, reference_design(x, spec.degree) @ np.arange(1.0, 100.0)[: exact.n_params]
    ) == pytest.approx(1.0, abs=1e-12)
    flat = spec.make().fit(x, np.full(len(x), 4.0))
    assert flat.score(x, np.full(len(x), 4.0)) == 1.0  # constant y, predicted exactly
    assert flat.score(x, np.full(len(x), 5.0)) == 0.0  # constant y, predicted wrongly


CHECKS: list[Callable[[Spec], None]] = [
    check_round_trip,
    check_inputs_unchanged,
    check_deterministic,
    check_chunks_equal_fit,
    check_agrees_with_lstsq,
    check_state_restore,
    check_rank_deficient,
    check_input_errors,
    check_score,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_regressor_contract(spec: Spec, check: Callable[[Spec], None]) -> None:
    check(spec)


# -- the checks can fail ----------------------------------------------------------------------


def test_lstsq_check_rejects_normal_equations() -> None:
    """On degree 5 over [-10, 10] (mostly 8..10) solving X^T X fails the 1e-6 check; QR passes."""
    rng = np.random.default_rng(7)
    x = np.r_[rng.uniform(8, 10, (380, 1)), rng.uniform(-10, -9.5, (20, 1))]
    z = reference_design(x, 5)
    y = z @ rng.normal(size=6) + rng.normal(size=len(x))
    ref = lstsq(x, y, 5)
    normal_equations = np.linalg.solve(z.T @ z, z.T @ y)
    with pytest.raises(AssertionError):
        assert_matches_lstsq(normal_equations, ref)
    assert_matches_lstsq(theta(PolynomialRegressor(5).fit(x, y)), ref)
    chunked = PolynomialRegressor(5)
    for part in np.array_split(np.arange(len(x)), 9):
        chunked.partial_fit(x[part], y[part])
    assert_matches_lstsq(theta(chunked), ref)


def test_same_fit_check_rejects_a_perturbed_fit() -> None:
    spec = Spec("polynomial", 3, None)
    x, y = make_data(spec)
    th = theta(spec.make().fit(x, y))
    nudged = th.copy()
    nudged[4] *= 1 + 1e-7
    with pytest.raises(AssertionError):
        assert_same_fit(nudged, th, x, 3, tol=1e-9)


# -- polynomial features ----------------------------------------------------------------------


def test_polynomial_features_order_is_scikit_learns() -> None:
    z = polynomial_features(np.array([[2.0, 3.0]]), 3)
    #                        1  x0 x1 x0² x0x1 x1² x0³ x0²x1 x0x1² x1³
    assert z.tolist() == [[1, 2, 3, 4, 6, 9, 8, 12, 18, 27]]
    assert polynomial_powers(2, 2) == [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]
    assert n_polynomial_terms(3, 5) == 56


@settings(max_examples=40, deadline=None)
@given(
    n_rows=st.integers(0, 20),
    n_features=st.integers(1, 5),
    degree=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_polynomial_features_match_reference(
    n_rows: int, n_features: int, degree: int, seed: int
) -> None:
    x = np.random.default_rng(seed).uniform(-3, 3, (n_rows, n_features))
    z = polynomial_features(x, degree)
    assert z.shape == (n_rows, n_polynomial_terms(n_features, degree))
    np.testing.assert_allclose(z, reference_design(x, degree).reshape(z.shape), rtol=1e-13)
    powers = np.array(polynomial_powers(n_features, degree))
    np.testing.assert_allclose(z, np.prod(x[:, None, :] ** powers[None], axis=2), rtol=1e-13)


def test_polynomial_features_rejects_bad_input() -> None:
    with pytest.raises(ModelError, match="degree: expected 1 to 10, got 0"):
        polynomial_features(np.ones((2, 2)), 0)
    with pytest.raises(ModelError, match="degree: expected an integer, got True"):
        polynomial_features(np.ones((2, 2)), True)
    with pytest.raises(ModelError, match="2-D"):
        polynomial_features(np.ones((2, 2, 2)), 2)


# -- from_dict / from_state_dict reject what they cannot trust -----------------------------------


def poly_params() -> dict[str, Any]:
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (50, 2))
    return PolynomialRegressor(3).fit(x, x[:, 0] ** 3 - x[:, 1]).to_dict()


def with_changes(**changes: Any) -> dict[str, Any]:
    params = poly_params()
    for key, value in changes.items():
        if value is KeyError:
            del params[key]
        else:
            params[key] = value
    return params


def coef_with(index: int, value: Any) -> list[Any]:
    coef: list[Any] = list(poly_params()["coef"])
    coef[index] = value
    return coef


BAD_PARAMS = [
    (with_changes(kind="cubic"), "params: unknown kind 'cubic'; expected one of 'multivariate'"),
    (with_changes(kind=KeyError), "params: missing key 'kind'"),
    (with_changes(kind=3), "unknown kind 3"),
    (
        with_changes(coef=poly_params()["coef"][:-1]),
        "polynomial params: expected 9 coefficients for 2 features at degree 3 "
        "(intercept apart), got 8",
    ),
    (with_changes(n_features=3), "expected 19 coefficients for 3 features at degree 3"),
    (with_changes(coef=coef_with(4, float("nan"))), "'coef'[4] must be a finite number, got nan"),
    (with_changes(coef=coef_with(0, float("-inf"))), "'coef'[0] must be a finite number, got -inf"),
    (with_changes(intercept=float("inf")), "'intercept' must be a finite number, got inf"),
    (with_changes(coef=coef_with(1, "0.5")), "'coef'[1] must be a number, got '0.5'"),
    (with_changes(coef=coef_with(2, True)), "'coef'[2] must be a number, got True"),
    (with_changes(coef=coef_with(3, None)), "'coef'[3] must be a number, got None"),
    (with_changes(coef="1,2,3"), "'coef' must be a list of numbers, got '1,2,3'"),
    (with_changes(intercept="1.5"), "'intercept' must be a number, got '1.5'"),
    (with_changes(intercept=False), "'intercept' must be a number, got False"),
    (with_changes(n_features=True), "'n_features' must be an integer, got True"),
    (with_changes(n_features="2"), "'n_features' must be an integer, got '2'"),
    (with_changes(n_features=0), "'n_features' must be >= 1, got 0"),
    (with_changes(degree=3.0), "'degree' must be an integer, got float"),
    (with_changes(degree=11), "'degree' must be <= 10, got 11"),
    (with_changes(degree=KeyError), "polynomial params: missing key 'degree'"),
    (with_changes(coef=KeyError), "polynomial params: missing key 'coef'"),
    (with_changes(intercept=KeyError), "polynomial params: missing key 'intercept'"),
    (with_changes(n_features=KeyError), "polynomial params: missing key 'n_features'"),
    (with_changes(bias=0.0), "polynomial params: unexpected key 'bias'"),
    (
        with_changes(coef=coef_with(5, 1e308)),
        "polynomial params: 'coef'[5] is 1e+308, beyond ±1e15, the largest coefficient",
    ),
    (with_changes(intercept=-2e15), "'intercept' is -2000000000000000.0, beyond ±1e15"),
    (with_changes(coef=coef_with(0, 10**16)), "'coef'[0] is 1e+16, beyond ±1e15"),
    ([1.0, 2.0], "params: expected an object (dict), got list"),
]


@pytest.mark.parametrize(("params", "message"), BAD_PARAMS)
def test_from_dict_rejects_bad_params(params: Any, message: str) -> None:
    with pytest.raises(ModelError) as info:
        regressor_from_dict(params)
    assert message in str(info.value)


def test_from_dict_takes_coefficients_up_to_the_param_limit() -> None:
    params = with_changes(intercept=-MAX_ABS_PARAM, coef=coef_with(8, MAX_ABS_PARAM))
    assert regressor_from_dict(params).coef[8] == MAX_ABS_PARAM


def worst_model(kind: str, degree: int, n_features: int) -> Regressor:
    """A model at the contract's limits: every coefficient is +1e15."""
    n_terms = n_features + 1 if kind == "multivariate" else n_polynomial_terms(n_features, degree)
    params: dict[str, Any] = {"kind": kind, "n_features": n_features}
    if kind == "polynomial":
        params["degree"] = degree
    params.update(intercept=MAX_ABS_PARAM, coef=[MAX_ABS_PARAM] * (n_terms - 1))
    return regressor_from_dict(params)


@pytest.mark.parametrize(
    ("kind", "degree", "n_features"),
    [
        ("multivariate", 1, 1999),  # the most features a model may have
        ("polynomial", 3, 20),  # degree 3: C(23, 3) = 1771 terms, the most under 2000
        ("polynomial", 6, 6),
        ("polynomial", 10, 4),  # the highest degree: 1001 terms of x**10 up to 1e120
    ],
)
def test_any_point_within_the_input_limits_has_a_finite_prediction(
    kind: str, degree: int, n_features: int
) -> None:
    model = worst_model(kind, degree, n_features)
    rng = np.random.default_rng(6)
    rows = np.vstack(
        [
            np.full(n_features, MAX_ABS_INPUT),  # every term at its largest, same sign
            np.full(n_features, -MAX_ABS_INPUT),
            rng.choice([-MAX_ABS_INPUT, MAX_ABS_INPUT], (8, n_features)),
            rng.uniform(-MAX_ABS_INPUT, MAX_ABS_INPUT, (8, n_features)),
        ]
    )
    predictions = model.predict(rows)
    assert np.isfinite(predictions).all()
    # the largest: every feature at +1e12, so every term at +1e15 * 1e12**(its degree)
    largest = sum(
        math.comb(n_features + k - 1, k) * MAX_ABS_PARAM * MAX_ABS_INPUT**k
        for k in range(degree + 1)
    )
    assert predictions[0] == pytest.approx(largest, rel=1e-9)
    assert float(np.max(np.abs(predictions))) <= largest * (1 + 1e-9) < 2e138


def test_from_dict_checks_kind_of_the_class_it_is_called_on() -> None:
    with pytest.raises(ModelError, match="params: expected kind 'multivariate', got 'polynomial'"):
        MultivariateRegressor.from_dict(poly_params())
    params = {"kind": "multivariate", "n_features": 2, "degree": 1, "intercept": 0, "coef": [1, 2]}
    with pytest.raises(ModelError, match="multivariate params: unexpected key 'degree'"):
        regressor_from_dict(params)
    del params["degree"]
    model = regressor_from_dict(params)  # ints are numbers too
    assert model.predict([[1.0, 1.0]]).tolist() == [3.0]


def test_from_state_dict_rejects_bad_state() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=30)
    cumulative = PolynomialRegressor(2).fit(x, y).state_dict()
    window = MultivariateRegressor(window=10).fit(x, y).state_dict()
    cases: list[tuple[dict[str, Any], str]] = [
        ({**cumulative, "format": 2}, "unsupported format 2; expected 1"),
        ({**cumulative, "r": cumulative["r"][:-1]}, "'r' must be a list of 7 rows"),
        (
            {**cumulative, "r": [cumulative["r"][0][:-1], *cumulative["r"][1:]]},
            "expected 7 numbers in 'r'[0]",
        ),
        ({**cumulative, "r": [[float("nan")] * 7, *cumulative["r"][1:]]}, "must be a finite"),
        ({**cumulative, "window": 0}, "window: expected a positive integer or None, got 0"),
        ({**cumulative, "n_seen": -1}, "'n_seen' must be >= 0"),
        ({**window, "x": window["x"][:-1]}, "'x' must be a list of 10 rows, got 9"),
        ({**window, "y": window["y"][:-1]}, "expected 10 targets in 'y', got 9"),
        ({**window, "x": [[1.0], *window["x"][1:]]}, "expected 2 features per row of 'x', got 1"),
        ({**window, "r": []}, "unexpected key 'r'"),
        ({**window, "kind": "polynomial"}, "missing key 'degree'"),
    ]
    for state, message in cases:
        with pytest.raises(ModelError) as info:
            regressor_from_state_dict(state)
        assert message in str(info.value), state
    loaded = regressor_from_dict(PolynomialRegressor(2).fit(x, y).to_dict())
    with pytest.raises(ModelError, match="no training state"):
        loaded.state_dict()


# -- construction and the factory ---------------------------------------------------------------


def test_make_regressor_and_params() -> None:
    poly = make_regressor("polynomial", degree=4, window=50)
    assert isinstance(poly, PolynomialRegressor)
    assert (poly.kind, poly.degree, poly.window) == ("polynomial", 4, 50)
    assert poly.params() == {"degree": 4, "window": 50}
    twin = make_regressor(poly.kind, **poly.params())
    assert twin.params() == poly.params()
    assert make_regressor("multivariate").params() == {"window": None}
    with pytest.raises(ModelError, match="unknown model kind 'cubic'"):
        make_regressor("cubic")
    with pytest.raises(ModelError, match="multivariate: bad options"):
        make_regressor("multivariate", degree=2)
    for bad in (0, -3, True, 2.5, "10"):
        with pytest.raises(ModelError, match="window: expected a positive integer"):
            MultivariateRegressor(window=bad)  # type: ignore[arg-type]
    for bad_degree in (0, 11, True, 2.0):
        with pytest.raises(ModelError, match="degree"):
            PolynomialRegressor(bad_degree)  # type: ignore[arg-type]


def test_fit_errors_and_limits() -> None:
    with pytest.raises(ModelError, match="needs at least one point"):
        MultivariateRegressor().fit(np.empty((0, 2)), np.empty(0))
    model = MultivariateRegressor().partial_fit(np.empty((0, 2)), np.empty(0))
    assert model.n_features == 2 and not model.is_fitted
    assert PolynomialRegressor(5).max_abs_input == pytest.approx(1e20)
    assert MultivariateRegressor().max_abs_input == 1e100
    with pytest.raises(ModelError, match="overflow the polynomial expansion"):
        PolynomialRegressor(5).fit([[1e30, 1.0], [1.0, 2.0]], [1.0, 2.0])
    with pytest.raises(ModelError, match="more than the 2000 supported; lower the degree"):
        PolynomialRegressor(6).fit(np.ones((3, 40)), np.ones(3))
    with pytest.raises(ModelError, match="expected a 1-D array"):
        MultivariateRegressor().fit(np.ones((3, 2)), np.ones((3, 1)))


def test_fit_starts_over_and_a_loaded_model_can_be_refitted() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 2))
    model = MultivariateRegressor().fit(x, 2 * x[:, 0])
    model.fit(x, 3 * x[:, 1] + 1)
    assert model.n_seen == 40
    np.testing.assert_allclose(theta(model), [1.0, 0.0, 3.0], atol=1e-12)
    loaded = regressor_from_dict(model.to_dict())
    loaded.fit(x, -x[:, 0])
    assert loaded.is_trainable
    np.testing.assert_allclose(theta(loaded), [0.0, -1.0, 0.0], atol=1e-12)


def test_window_forgets_old_points_exactly() -> None:
    """After a regime change, a window model fits only the new regime, a cumulative one both."""
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (3000, 1))
    y = np.where(np.arange(3000) < 2000, 5 * x[:, 0], -2 * x[:, 0] + 1)
    window, cumulative = MultivariateRegressor(window=1000), MultivariateRegressor()
    for part in np.array_split(np.arange(3000), 37):
        window.partial_fit(x[part], y[part])
        cumulative.partial_fit(x[part], y[part])
    np.testing.assert_allclose(theta(window), [1.0, -2.0], atol=1e-12)
    assert abs(cumulative.coef[0] - (-2.0)) > 1.0


@settings(max_examples=15, deadline=None)
@given(
    window=st.sampled_from([257, 600, 1300]),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=12),
    degree=st.sampled_from([1, 2]),
)
def test_window_spanning_many_blocks_equals_lstsq_on_last_points(
    window: int, sizes: list[int], degree: int
) -> None:
    """Head, queued blocks, tail and the queue's rebuilds: compared after every batch."""
    rng = np.random.default_rng(window + len(sizes))
    x = rng.uniform(-10, 10, (sum(sizes) + 600, 2))
    y = reference_design(x, degree) @ rng.normal(size=n_polynomial_terms(2, degree))
    y += rng.normal(size=len(y))
    model: Regressor = PolynomialRegressor(degree, window=window)
    model.partial_fit(x[:600], y[:600])
    seen = 600
    for size in sizes:
        model.partial_fit(x[seen : seen + size], y[seen : seen + size])
        seen += size
        lo = max(0, seen - window)
        assert_same_fit(theta(model), lstsq(x[lo:seen], y[lo:seen], degree), x, degree, 1e-9)
        if size % 3 == 0:  # restart from a checkpoint now and then
            model = regressor_from_state_dict(json.loads(json.dumps(model.state_dict())))
