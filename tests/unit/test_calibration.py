"""The scorer's recalibration after a jump of the serving version's residuals."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from scorer.calibration import Calibrated, Calibration, calibrate

Array = NDArray[np.float64]
KEY = ("polynomial", 3)
SIGMA = 0.1


def stream(n: int, jump_at: int | None, seed: int = 1) -> tuple[Array, Array]:
    """(the version's outputs, labels): noise 0.1 around them, ``-1.5 * f - 1.25`` after
    ``jump_at`` (a sign flip, a new scale and a shift: the dummy source's drift)."""
    rng = np.random.default_rng(seed)
    outputs = rng.uniform(-3, 3, n) ** 3
    truth = outputs.copy()
    if jump_at is not None:
        truth[jump_at:] = -1.5 * outputs[jump_at:] - 1.25
    return outputs, truth + rng.normal(0, SIGMA, n)


def serve(outputs: Array, labels: Array, batch: int) -> tuple[Array, list[Calibrated]]:
    """Serve the stream in batches, each committed before the next."""
    state = Calibration()
    values, batches = [], []
    for start in range(0, len(outputs), batch):
        done = calibrate(
            state, KEY, outputs[start : start + batch], labels[start : start + batch], SIGMA
        )
        state = state.then(state, done)
        values.append(done.values)
        batches.append(done)
    return np.concatenate(values), batches


def test_a_stationary_stream_is_served_as_the_version_says() -> None:
    outputs, labels = stream(100_000, None)
    values, batches = serve(outputs, labels, 500)
    assert not any(b.jumped or b.state.active for b in batches)
    assert all(b.coefficients is None for b in batches)
    np.testing.assert_array_equal(values, outputs)


def test_a_version_exact_on_its_stream_does_not_jump_on_rounding() -> None:
    outputs = np.random.default_rng(2).uniform(-1e6, 1e6, 5_000)
    labels = outputs * (1 + np.random.default_rng(3).normal(0, 1e-15, outputs.size))
    _, batches = serve(outputs, labels, 100)
    assert not any(b.jumped for b in batches)


@pytest.mark.parametrize("batch", [1, 7, 100])
def test_a_jump_is_followed_within_a_few_points(batch: int) -> None:
    outputs, labels = stream(2_000, 1_000)
    values, batches = serve(outputs, labels, batch)
    errors = np.abs(values - labels)
    assert sum(b.jumped for b in batches) == 1
    assert errors[:1_000].max() < 6 * SIGMA, "nothing changes before the jump"
    assert np.sqrt(np.mean(errors[1_010:] ** 2)) < 1.2 * SIGMA, "back at the noise level"
    assert np.count_nonzero(errors[1_000:] > 10 * SIGMA) <= 6, "only the first few points err"
    without = np.sqrt(np.mean((outputs[1_000:] - labels[1_000:]) ** 2))
    assert without > 20 * SIGMA, "the stream must really change for this test to mean much"


def test_each_point_is_served_without_its_own_label() -> None:
    outputs, labels = stream(400, 200)
    values, _ = serve(outputs, labels, 400)
    one_by_one, _ = serve(outputs, labels, 1)
    np.testing.assert_allclose(values, one_by_one, rtol=1e-9, atol=1e-9)
    for k in (203, 250, 399):  # after the jump: a point's label never changes its value
        changed = labels.copy()
        changed[k] += 1e3
        again, _ = serve(outputs, changed, 400)
        assert again[k] == values[k]
        assert again[k + 1 :].tolist() != values[k + 1 :].tolist() or k == 399


def test_unlabelled_points_get_the_current_fit_and_teach_nothing() -> None:
    outputs, labels = stream(600, 300)
    holes = labels.copy()
    holes[400:600:2] = np.nan
    values, batches = serve(outputs, holes, 50)
    assert batches[-1].coefficients is not None
    a, b = batches[-1].coefficients[-1]
    assert a == pytest.approx(-1.25, abs=0.05) and b == pytest.approx(-1.5, abs=0.01)
    assert np.abs(values[401:600:2] - (-1.5 * outputs[401:600:2] - 1.25)).max() < 0.1


def test_another_version_starts_over() -> None:
    outputs, labels = stream(300, 100)
    done = calibrate(Calibration(), KEY, outputs, labels, SIGMA)
    assert done.state.active
    other = calibrate(done.state, ("polynomial", 4), outputs[:50], labels[:50], SIGMA)
    assert not other.state.active and other.coefficients is None
    np.testing.assert_array_equal(other.values, outputs[:50])


def test_without_a_noise_level_nothing_is_watched() -> None:
    outputs, labels = stream(300, 100)
    done = calibrate(Calibration(), KEY, outputs, labels, None)
    assert not done.state.active and done.values is outputs


def test_a_batch_worked_out_before_the_one_ahead_committed_adds_what_it_learnt() -> None:
    outputs, labels = stream(300, 0)
    base = Calibration()
    first = calibrate(base, KEY, outputs[:100], labels[:100], SIGMA)
    second = calibrate(base, KEY, outputs[100:200], labels[100:200], SIGMA)  # same base
    state = base.then(base, first).then(base, second)
    chained = calibrate(first.state, KEY, outputs[100:200], labels[100:200], SIGMA).state
    assert state.active and chained.active
    assert state.sums[0] == 200 == chained.sums[0]  # every labelled point, once
    np.testing.assert_allclose(state.sums, chained.sums, rtol=1e-9)


def test_a_fit_past_the_float_range_serves_the_version_itself() -> None:
    outputs, labels = stream(200, 100)
    done = calibrate(Calibration(), KEY, outputs, labels, SIGMA)
    huge = np.full(5, 1.7e308)
    after = calibrate(done.state, KEY, huge, np.full(5, np.nan), SIGMA)
    assert np.isfinite(after.values).all()
    assert after.coefficients is not None and np.isnan(after.coefficients).all()


def test_a_new_version_of_the_name_is_watched_against_the_lower_noise_level() -> None:
    outputs, labels = stream(400, 100)
    before = calibrate(Calibration(), KEY, outputs[:100], labels[:100], SIGMA)
    assert not before.state.active and before.state.sigma == SIGMA
    # the next version was scored on points of the change too: its own level is inflated
    inflated = 1000 * SIGMA
    after = calibrate(before.state, ("polynomial", 4), outputs[100:], labels[100:], inflated)
    assert after.jumped, "the predecessor's noise level still shows the change"
    alone = calibrate(Calibration(), ("polynomial", 4), outputs[100:], labels[100:], inflated)
    assert not alone.jumped
    other = calibrate(before.state, ("multivariate", 4), outputs[100:], labels[100:], inflated)
    assert not other.jumped, "another model's noise level is not this one's"
