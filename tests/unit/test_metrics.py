"""RollingMetrics: exact R2 / RMSE / MAE over the last ``window`` points."""

from __future__ import annotations

import dataclasses
import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ModelError
from regressors import MetricsSnapshot, RollingMetrics

# -- an exact reference: rational arithmetic on the last `window` points ------------------------


def _finite_or_none(value: Fraction) -> float | None:
    """``value`` as a double, or None when it is beyond one (R2 is then undefined)."""
    try:
        return float(value)
    except OverflowError:
        return None


def exact(y_true: list[float], y_pred: list[float], window: int) -> MetricsSnapshot:
    """Metrics of the last ``window`` points, computed exactly then rounded once."""
    ys = [Fraction(v) for v in y_true[-window:]]
    residuals = [Fraction(t - p) for t, p in zip(y_true[-window:], y_pred[-window:], strict=True)]
    n = len(ys)
    if n == 0:
        return MetricsSnapshot(0, window, None, None, None)
    ss_res = sum(r * r for r in residuals)
    mean = sum(ys) / n
    ss_tot = sum((v - mean) ** 2 for v in ys)
    r2 = None if n < 2 or float(ss_tot) == 0 else _finite_or_none(1 - ss_res / ss_tot)
    return MetricsSnapshot(
        count=n,
        window=window,
        r2=r2,
        rmse=math.sqrt(float(ss_res / n)),
        mae=float(sum(abs(r) for r in residuals) / n),
    )


def assert_close(got: MetricsSnapshot, want: MetricsSnapshot, tol: float = 1e-9) -> None:
    assert (got.count, got.window) == (want.count, want.window)
    for name in ("r2", "rmse", "mae"):
        g, w = getattr(got, name), getattr(want, name)
        assert (g is None) == (w is None), f"{name}: got {g}, want {w}"
        if g is not None:
            assert math.isclose(g, w, rel_tol=tol, abs_tol=1e-12), f"{name}: got {g}, want {w}"


# -- hypothesis strategies: streams that are hard on running sums ------------------------------

_scales = st.sampled_from([0.0, 1e-9, 1e-3, 1.0, 1e3, 1e6])
_offsets = st.sampled_from([0.0, 1.0, -7.5, 1e6, 1e9, -3e12])


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[list[tuple[float, float]]], int]:
    """Batches of (y_true, y_pred); values mix huge offsets with tiny spreads and constants."""
    window = draw(st.integers(1, 25))
    batches = []
    for _ in range(draw(st.integers(1, 8))):
        offset, spread, error = draw(_offsets), draw(_scales), draw(_scales)
        size = draw(st.integers(0, 40))
        unit = st.floats(-1.0, 1.0, allow_nan=False)
        points = draw(st.lists(st.tuples(unit, unit), min_size=size, max_size=size))
        batches.append([(offset + spread * a, offset + spread * a + error * b) for a, b in points])
    return batches, window


@settings(max_examples=150, deadline=None)
@given(data=streams(), read_every_batch=st.booleans())
def test_batches_match_exact_recomputation(
    data: tuple[list[list[tuple[float, float]]], int], read_every_batch: bool
) -> None:
    batches, window = data
    metrics = RollingMetrics(window)
    y_true: list[float] = []
    y_pred: list[float] = []
    for batch in batches:
        metrics.update_many([t for t, _ in batch], [p for _, p in batch])
        y_true += [t for t, _ in batch]
        y_pred += [p for _, p in batch]
        if read_every_batch:
            assert_close(metrics.snapshot(), exact(y_true, y_pred, window))
    assert_close(metrics.snapshot(), exact(y_true, y_pred, window))
    assert metrics.n_seen == len(y_true)


@settings(max_examples=100, deadline=None)
@given(data=streams(), reads=st.sets(st.integers(0, 400), max_size=20))
def test_one_at_a_time_matches_batches_and_exact(
    data: tuple[list[list[tuple[float, float]]], int], reads: set[int]
) -> None:
    batches, window = data
    points = [pt for batch in batches for pt in batch]
    single, batched = RollingMetrics(window), RollingMetrics(window)
    for i, (t, p) in enumerate(points):
        single.update(t, p)
        if i in reads:
            assert_close(
                single.snapshot(),
                exact([t for t, _ in points[: i + 1]], [p for _, p in points[: i + 1]], window),
            )
    for batch in batches:
        batched.update_many(np.array([t for t, _ in batch]), np.array([p for _, p in batch]))
    want = exact([t for t, _ in points], [p for _, p in points], window)
    assert_close(single.snapshot(), want)
    assert_close(batched.snapshot(), want)
    assert_close(single.snapshot(), batched.snapshot())


def test_no_drift_after_huge_values_leave_the_window() -> None:
    """Naive running sums would keep ~1e-4 of garbage from the 1e8 values; these stay exact."""
    rng = np.random.default_rng(0)
    big_t = rng.normal(1e8, 1e6, 5000)
    big_p = big_t + rng.normal(0, 1e5, 5000)
    small_t = rng.normal(0.0, 1e-3, 3000)
    small_p = small_t + rng.normal(0, 1e-4, 3000)
    y_true, y_pred = np.r_[big_t, small_t], np.r_[big_p, small_p]
    batched, single = RollingMetrics(100), RollingMetrics(100)
    for part in np.array_split(np.arange(len(y_true)), 173):
        batched.update_many(y_true[part], y_pred[part])
        batched.snapshot()
    for t, p in zip(y_true, y_pred, strict=True):
        single.update(t, p)
    want = exact(y_true.tolist(), y_pred.tolist(), 100)
    assert_close(batched.snapshot(), want)
    assert_close(single.snapshot(), want)
    assert want.r2 is not None and 0.9 < want.r2 < 1.0


def test_long_stream_stays_exact() -> None:
    rng = np.random.default_rng(1)
    metrics = RollingMetrics(1000)
    y_true = rng.normal(50.0, 3.0, 200_000)
    y_pred = y_true + rng.normal(0.0, 1.0, 200_000)
    for part in np.array_split(np.arange(len(y_true)), 400):
        metrics.update_many(y_true[part], y_pred[part])
        metrics.r2  # noqa: B018 - reads may trigger recomputation; must not change results
    assert_close(metrics.snapshot(), exact(y_true.tolist(), y_pred.tolist(), 1000), tol=1e-12)


def test_the_exactness_check_can_fail() -> None:
    """A reference that ignores the window disagrees: the property tests have teeth."""
    y_true, y_pred = [1.0, 2.0, 3.0, 10.0], [1.5, 2.0, 2.0, 9.0]
    metrics = RollingMetrics(3)
    metrics.update_many(y_true, y_pred)
    with pytest.raises(AssertionError):
        assert_close(metrics.snapshot(), exact(y_true, y_pred, 4))
    assert_close(metrics.snapshot(), exact(y_true, y_pred, 3))


# -- edge cases -----------------------------------------------------------------------------------


def test_empty_and_single_point() -> None:
    metrics = RollingMetrics(5)
    assert metrics.snapshot() == MetricsSnapshot(count=0, window=5, r2=None, rmse=None, mae=None)
    metrics.update(3.0, 1.0)
    assert metrics.snapshot() == MetricsSnapshot(count=1, window=5, r2=None, rmse=2.0, mae=2.0)
    metrics.update_many([], [])
    assert metrics.count == 1


def test_known_values() -> None:
    metrics = RollingMetrics(3)
    metrics.update_many([100.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 5.0])  # 100 has left
    snap = metrics.snapshot()
    assert snap.count == 3
    assert snap.mae == pytest.approx(2.0 / 3.0)
    assert snap.rmse == pytest.approx(math.sqrt(4.0 / 3.0))
    assert snap.r2 == pytest.approx(1.0 - 4.0 / 2.0)


def test_constant_targets_have_no_r2() -> None:
    metrics = RollingMetrics(4)
    metrics.update_many([7.0, 1.0, 1.0, 1.0, 1.0], [7.0, 1.0, 1.5, 0.5, 1.0])
    assert metrics.r2 is None
    assert metrics.mae == pytest.approx(0.25)
    metrics.update(2.0, 2.0)
    assert metrics.r2 == pytest.approx(1.0 - 0.5 / 0.75)


def test_window_of_one_and_batches_longer_than_the_window() -> None:
    metrics = RollingMetrics(1)
    metrics.update_many([1.0, 2.0, 3.0], [0.0, 0.0, 1.0])
    assert (metrics.count, metrics.rmse, metrics.mae, metrics.r2) == (1, 2.0, 2.0, None)
    wide = RollingMetrics(4)
    wide.update(1000.0, 0.0)
    wide.update_many(np.arange(10.0), np.arange(10.0) + 1.0)
    assert_close(wide.snapshot(), exact(list(np.arange(10.0)), list(np.arange(10.0) + 1.0), 4))


def test_reset() -> None:
    metrics = RollingMetrics(3)
    metrics.update_many([1.0, 2.0], [1.0, 1.0])
    metrics.reset()
    assert metrics.snapshot() == MetricsSnapshot(0, 3, None, None, None)
    metrics.update_many([1.0, 2.0], [1.0, 2.5])
    assert_close(metrics.snapshot(), exact([1.0, 2.0], [1.0, 2.5], 3))


def test_snapshot_is_frozen_and_json_ready() -> None:
    metrics = RollingMetrics(10)
    metrics.update_many([1.0, 2.0, 4.0], [1.0, 2.5, 3.0])
    snap = metrics.snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.count = 5  # type: ignore[misc]
    text = json.dumps(snap.to_dict(), allow_nan=False)
    assert json.loads(text) == {
        "count": 3,
        "window": 10,
        "r2": snap.r2,
        "rmse": snap.rmse,
        "mae": snap.mae,
    }
    assert json.loads(json.dumps(RollingMetrics(2).snapshot().to_dict()))["r2"] is None


def test_bad_input_is_rejected() -> None:
    for bad_window in (0, -1, True, 2.5, None):
        with pytest.raises(ModelError, match="window: expected a positive integer"):
            RollingMetrics(bad_window)  # type: ignore[arg-type]
    metrics = RollingMetrics(3)
    with pytest.raises(ModelError, match="got 2 targets but 3 predictions"):
        metrics.update_many([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ModelError, match="y_pred: contains NaN, infinity"):
        metrics.update_many([1.0], [float("nan")])
    with pytest.raises(ModelError, match="y_true: contains NaN, infinity"):
        metrics.update_many([float("inf")], [1.0])
    with pytest.raises(ModelError, match="expected finite numbers"):
        metrics.update(float("nan"), 1.0)
    for text, flag in (("1.5", 1.0), (1.0, True)):
        with pytest.raises(ModelError, match="expected numbers, got"):
            metrics.update(text, flag)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="expected a 1-D array"):
        metrics.update_many([[1.0]], [[1.0]])
    with pytest.raises(ModelError, match="expected numbers"):
        metrics.update_many(["a"], ["b"])
    assert metrics.count == 0  # nothing half-applied


def test_inputs_are_not_modified() -> None:
    y_true, y_pred = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0])
    y_true.flags.writeable = False
    y_pred.flags.writeable = False
    RollingMetrics(2).update_many(y_true, y_pred)
    assert y_true.tolist() == [1.0, 2.0, 3.0] and y_pred.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("targets", "predictions"),
    [
        ([1e-160, 0.0], [1e5, -1e5]),  # a spread of 1e-160 against errors of 1e5: -1e330
        ([5.8e-264, 0.0], [5.8e-264, 1e-9]),  # the spread's square underflows to 0
    ],
)
def test_r2_is_never_infinite(targets: list[float], predictions: list[float]) -> None:
    metrics = RollingMetrics(len(targets))
    metrics.update_many(targets, predictions)
    assert metrics.r2 is None
    assert metrics.rmse is not None and math.isfinite(metrics.rmse)
    json.dumps(dataclasses.asdict(metrics.snapshot()), allow_nan=False)  # a scores value
