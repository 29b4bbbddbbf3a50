"""When the trainer publishes, with a fake clock; and the prequential training score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.models import PrequentialScore
from trainer.publish import PublishPolicy


def test_nothing_read_nothing_due() -> None:
    policy = PublishPolicy(every=10, interval_s=5.0)
    assert not policy.due(1e9)
    assert not policy.pending


def test_due_after_every_n_points() -> None:
    policy = PublishPolicy(every=10, interval_s=5.0)
    policy.note(points=6, deadletters=0, consumed=True, now=100.0)
    assert not policy.due(100.1)
    policy.note(points=4, deadletters=0, consumed=True, now=100.2)
    assert policy.due(100.2)
    policy.published()
    assert not policy.due(100.3)
    assert policy.new_points == 0


def test_due_after_the_interval_since_the_first_unpublished_point() -> None:
    policy = PublishPolicy(every=1000, interval_s=5.0)
    policy.note(points=1, deadletters=0, consumed=True, now=100.0)
    policy.note(points=1, deadletters=0, consumed=True, now=104.0)
    assert not policy.due(104.9)
    assert policy.due(105.0)


def test_a_quiet_stream_waits_for_new_data_then_the_interval() -> None:
    policy = PublishPolicy(every=1000, interval_s=5.0)
    policy.note(points=0, deadletters=0, consumed=False, now=100.0)  # empty poll
    assert not policy.due(1000.0)
    policy.note(points=3, deadletters=0, consumed=True, now=1000.0)
    assert not policy.due(1004.0)
    assert policy.due(1005.0)


def test_offsets_and_deadletters_alone_are_committed_after_the_interval() -> None:
    policy = PublishPolicy(every=10, interval_s=5.0, max_deadletters=3)
    policy.note(points=0, deadletters=0, consumed=True, now=0.0)  # unlabelled points only
    assert policy.pending and not policy.due(4.0) and policy.due(5.0)
    policy.published()
    policy.note(points=0, deadletters=3, consumed=True, now=6.0)
    assert policy.due(6.0)  # enough dead letters waiting


def test_prequential_score_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(7)
    y = 1000.0 + rng.normal(size=3000)  # far from zero: merging must not cancel
    prediction = y + rng.normal(scale=0.3, size=3000)
    score = PrequentialScore()
    for lo in range(0, 3000, 700):
        score.add(y[lo : lo + 700], prediction[lo : lo + 700])
    got = score.snapshot()
    error = y - prediction
    r2 = 1 - (error @ error) / ((y - y.mean()) @ (y - y.mean()))
    assert got["r2"] == pytest.approx(r2, rel=1e-12)
    assert got["rmse"] == pytest.approx(math.sqrt((error @ error) / 3000), rel=1e-12)
    assert got["mae"] == pytest.approx(np.abs(error).mean(), rel=1e-12)


def test_prequential_score_undefined_cases() -> None:
    assert PrequentialScore().snapshot() == {"r2": None, "rmse": None, "mae": None}
    one = PrequentialScore()
    one.add(np.array([2.0]), np.array([1.0]))
    assert one.snapshot() == {"r2": None, "rmse": 1.0, "mae": 1.0}
    constant = PrequentialScore()
    constant.add(np.array([2.0, 2.0]), np.array([1.0, 3.0]))
    assert constant.snapshot()["r2"] is None


def test_after_a_drift_a_version_is_due_after_every_batch_then_every_tenth() -> None:
    """The new regime's first versions come at once, whatever the batch size."""
    policy = PublishPolicy(every=1000, interval_s=math.inf)
    policy.drift()
    due_at = []
    for batch in range(1, 61):  # batches of 5 points: 300 points since the drift
        policy.note(points=5, deadletters=0, consumed=True, now=0.0)
        if policy.due(0.0):
            due_at.append(batch * 5)
            policy.published()
    assert due_at[:20] == list(range(5, 105, 5))  # every batch for the first 100 points
    assert due_at[20:] == [200, 300]  # then every 1000 // 10 points


def test_without_a_drift_small_batches_wait_for_every_points() -> None:
    policy = PublishPolicy(every=1000, interval_s=math.inf)
    for _ in range(199):
        policy.note(points=5, deadletters=0, consumed=True, now=0.0)
        assert not policy.due(0.0)
    policy.note(points=5, deadletters=0, consumed=True, now=0.0)
    assert policy.due(0.0)
