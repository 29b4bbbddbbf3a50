"""Recalibration of the serving version between a sudden change and the version that follows.

A new version needs new points before the trainer can fit and publish it: after an
abrupt change the serving version is wrong for every point until then. Within that
gap the scorer still learns from each labelled point as it comes (test, then
train, point by point, as an online learner does): it watches the serving
version's residuals and, once they jump, serves ``a + b * output`` instead of the
version's ``output``, with ``a`` and ``b`` the least-squares fit of the labels on
the outputs of the points since the jump. A shift, a change of scale or of sign of
the target is so followed within a few points; a change of shape waits for the
next version, as before. The episode ends when another version serves.

The jump is found by a CUSUM (Page 1954) on the squared residuals over the
version's noise level ``sigma`` (its own rolling RMSE on this stream once it was
scored on enough points, so a version that was always poor here is judged by its own
errors), each clipped at `CLIP`: ``W = max(0, W + s - K)``, a jump once ``W >= H``.
A residual of 4 sigma or more adds 12, so three such points in a row fire, and noise
almost never does. A new version of the same name is watched against the lower of its
own noise level and its predecessor's: one that arrives after a change was scored on
points of the change too, and its own level alone would hide it. The fit starts from
``a = 0, b = 1`` (the version itself) weighing `PRIOR` points, so one point moves it
only part of the way.

Everything is computed for a whole batch at once (prefix sums, no Python loop over
points): each point is served with what the labelled points *before it* say, never
with its own label. `calibrate` changes nothing: it returns the state to keep once
the batch is committed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Squared scaled residuals count at most this much (4 sigma), so one outlier weighs little.
CLIP = 16.0
#: What the CUSUM takes off each point: noise (mean about 1) drives it back to 0.
K = 4.0
#: The CUSUM level that says the version no longer holds: three points of 4 sigma or more
#: in a row (two fire too often on the heavy tails of a version that fits poorly).
H = 30.0
#: Weight, in points, of the starting fit ``a = 0, b = 1``.
PRIOR = 1.0
#: Residuals within this fraction of the labels' size are rounding, not noise: ``sigma``
#: is taken at least that large (a version exact on its stream would jump on rounding).
ROUNDING = 1e-9

# Sums over the points since the change began: count, output, output², label, output * label.
_SUMS = 5
_NONE = (0.0,) * _SUMS


@dataclass(frozen=True, slots=True)
class Calibration:
    """Where the serving version ``key`` stands: watching, or recalibrated (``active``).

    ``sums`` cover the labelled points since the change began: while watching, those
    since the last residual under 4 sigma (so that the fit starts at the first changed
    point, known only afterwards, and hardly ever at one of noise); once active, those
    and every one since.
    """

    key: tuple[str, int] | None = None
    cusum: float = 0.0
    sums: tuple[float, ...] = _NONE
    active: bool = False
    #: the noise level watched against (kept for the next version of the same name)
    sigma: float | None = None

    def then(self, base: Calibration, batch: Calibrated) -> Calibration:
        """This state once ``batch``, worked out from ``base``, is committed.

        A batch may be worked out before the one ahead of it is committed (the
        kernel commits in the background): once this state is recalibrated, what
        the batch learnt is added to it, not put in its place.
        """
        after = batch.state
        if self == base or after.key != self.key or not self.active:
            return after
        learnt = np.asarray(self.sums) + np.asarray(batch.learnt)
        return Calibration(self.key, 0.0, _tuple(learnt), True, self.sigma)


@dataclass(frozen=True, slots=True)
class Calibrated:
    """A batch served: the values, the ``(a, b)`` of each recalibrated one, the state after."""

    values: FloatArray
    #: rows ``(a, b)`` per point, NaN where the version's own output was served; None: none
    coefficients: FloatArray | None
    state: Calibration
    #: True when the jump was found in this batch
    jumped: bool = False
    #: what this batch's own points added to the sums
    learnt: tuple[float, ...] = _NONE


def calibrate(
    state: Calibration,
    key: tuple[str, int],
    outputs: FloatArray,
    labels: FloatArray,
    sigma: float | None,
) -> Calibrated:
    """Serve ``outputs`` (the version ``key``'s, in stream order), learning from ``labels``.

    ``labels`` holds NaN for unlabelled points. ``sigma`` is the version's noise
    level (None or not positive: no watching, only a recalibration already under
    way goes on).
    """
    if state.key != key:  # a new version of the name keeps the lower noise level known
        same_name = state.key is not None and state.key[0] == key[0]
        state = Calibration(key, sigma=state.sigma if same_name else None)
    known = [s for s in (sigma, state.sigma) if s is not None and s > 0.0]
    sigma = min(known) if known else None
    labelled = np.flatnonzero(np.isfinite(labels))
    p, y = outputs[labelled], labels[labelled]
    carried = np.asarray(state.sums, dtype=np.float64)
    begin = 0  # first labelled point (of ``labelled``) the fit learns from
    first = 0  # first point (of the batch) served recalibrated
    jumped = False
    if not state.active:
        if sigma is None or not labelled.size:
            return Calibrated(outputs, None, state)
        scale = max(sigma, ROUNDING * float(np.mean(np.abs(y))), math.ulp(1.0))
        steps = np.minimum(((y - p) / scale) ** 2, CLIP) - K
        level = _cusum(steps, state.cusum)
        over = np.flatnonzero(level >= H)
        end = int(over[0]) + 1 if over.size else level.size  # points the watch took
        calm = np.flatnonzero(steps[:end] < CLIP - K)
        if calm.size:  # the change began after the last point under 4 sigma
            carried, begin = np.zeros(_SUMS), int(calm[-1]) + 1
        if not over.size:
            learnt = _terms(p[begin:], y[begin:]).sum(axis=0)
            watching = Calibration(key, float(level[-1]), _tuple(carried + learnt), False, sigma)
            return Calibrated(outputs, None, watching, learnt=_tuple(learnt))
        first, jumped = int(labelled[end - 1]) + 1, True
    terms = _terms(p, y)
    terms[:begin] = 0.0
    prefix = np.vstack([np.zeros(_SUMS), np.cumsum(terms, axis=0)]) + carried
    before = np.searchsorted(labelled, np.arange(outputs.size))  # labelled points before each
    values = outputs.copy()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        a, b = _solve(prefix[before[first:]])
        recalibrated = a + b * outputs[first:]
    fine = np.isfinite(recalibrated)  # past the float range: the version's own output
    values[first:] = np.where(fine, recalibrated, outputs[first:])
    coefficients = np.full((outputs.size, 2), np.nan)
    coefficients[first:, 0] = np.where(fine, a, np.nan)
    coefficients[first:, 1] = np.where(fine, b, np.nan)
    state = Calibration(key, 0.0, _tuple(prefix[-1]), True, sigma)
    return Calibrated(values, coefficients, state, jumped, _tuple(terms.sum(axis=0)))


def _cusum(steps: FloatArray, start: float) -> FloatArray:
    """The CUSUM's level after each step, from ``start``."""
    total = np.cumsum(steps)
    # W_t = max(0, W_{t-1} + s_t), W_0 = start: W_t = C_t - min(-start, min_{k<=t} C_k)
    return np.asarray(total - np.minimum(-start, np.minimum.accumulate(total)))


def _terms(p: FloatArray, y: FloatArray) -> FloatArray:
    """Each point's share of the sums (rows: 1, p, p², y, p * y)."""
    return np.stack([np.ones_like(p), p, p * p, y, p * y], axis=1)


def _tuple(sums: FloatArray) -> tuple[float, ...]:
    return tuple(float(v) for v in sums)


def _solve(sums: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per row of sums, the ridge fit ``y = a + b * p`` pulled towards ``(0, 1)``."""
    n, sp, spp, sy, spy = (sums[:, k] for k in range(_SUMS))
    m00, m01, m11 = n + PRIOR, sp, spp + PRIOR
    r0, r1 = sy, spy + PRIOR
    det = m00 * m11 - m01 * m01
    return (m11 * r0 - m01 * r1) / det, (m00 * r1 - m01 * r0) / det
