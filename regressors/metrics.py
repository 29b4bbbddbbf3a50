"""Exact rolling regression metrics (R2, RMSE, MAE) over the last ``window`` points."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike

from core.errors import ModelError
from regressors.base import MAX_ABS_VALUE, FloatArray

_EPS = float(np.finfo(np.float64).eps)

#: A read recomputes the sums from the window when their rounding-error bound exceeds
#: this fraction of the value, so every metric is within about 1e-12 of the exact one.
RESYNC_TOLERANCE = 1e-12


def _gamma(n_terms: int) -> float:
    """Bound on the relative rounding error of forming and summing ``n_terms`` terms.

    numpy sums pairwise (error growing like log2 n) after 8-way unrolled blocks of up to
    128 terms; 20 + log2(n) units of eps covers both with margin.
    """
    return _EPS * (20.0 + math.log2(max(n_terms, 1)))


class _Sum:
    """A running sum of terms that come and go, with a bound on its rounding error."""

    __slots__ = ("bound", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.bound = 0.0

    def set(self, value: float, abs_total: float, n_terms: int) -> None:
        """Set the sum as computed afresh from ``n_terms`` terms whose |sum| is ``abs_total``."""
        self.value = value
        self.bound = _gamma(n_terms) * abs_total

    def move(self, add: float, add_abs: float, sub: float, sub_abs: float, n_terms: int) -> None:
        """Add the sum ``add`` of new terms and remove the sum ``sub`` of leaving ones."""
        partial = self.value + add
        self.value = partial - sub
        self.bound += _gamma(n_terms) * (add_abs + sub_abs) + _EPS * (
            abs(partial) + abs(self.value)
        )

    def reliable(self) -> bool:
        """True if the rounding bound is within `RESYNC_TOLERANCE` of the value."""
        return self.bound <= RESYNC_TOLERANCE * abs(self.value)


@dataclass(frozen=True)
class MetricsSnapshot:
    """Rolling metrics at one moment, JSON-ready: finite floats, or None when undefined."""

    count: int
    window: int
    r2: float | None
    rmse: float | None
    mae: float | None

    def to_dict(self) -> dict[str, int | float | None]:
        """Return the snapshot as a plain dict."""
        return asdict(self)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _as_values(values: ArrayLike, what: str) -> FloatArray:
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{what}: expected a 1-D array of numbers ({exc})") from exc
    if arr.dtype.kind not in "iuf":
        raise ModelError(f"{what}: expected numbers, got an array of {arr.dtype}")
    if arr.ndim != 1:
        raise ModelError(f"{what}: expected a 1-D array, got shape {arr.shape}")
    out = arr.astype(np.float64, copy=False)
    if out.size and not float(np.max(np.abs(out))) <= MAX_ABS_VALUE:
        raise ModelError(f"{what}: contains NaN, infinity or values beyond ±{MAX_ABS_VALUE:.0e}")
    return out


class RollingMetrics:
    """R2, RMSE and MAE of predictions over the last ``window`` points, exact and O(1) to read.

    The window's targets and residuals sit in a ring buffer; running sums of
    ``(y - c)``, ``(y - c)^2`` (c: a shift, the window mean at the last recomputation),
    ``r^2`` and ``|r|`` get each new point added and each leaving point subtracted (as in
    river's utils/rolling.py). Every sum also carries a bound on its accumulated rounding
    error; when a read finds a bound above 1e-12 of the value (e.g. after a huge value
    left the window), all sums are recomputed from the buffer. So values always match a
    recomputation from scratch on the window to about 1e-12 relative, with no drift.

    Undefined values are None (never NaN, so a snapshot serializes to JSON as null):
    ``rmse`` and ``mae`` when the window is empty; ``r2`` when it holds fewer than 2
    points, all its targets are equal (SS_tot == 0), or their spread is so small
    next to the residuals that 1 - SS_res / SS_tot is beyond a double (never +-inf).

    Costs: ``update`` O(1); ``update_many`` vectorized, O(batch); reads O(1) except for
    the occasional O(window) recomputation.
    """

    def __init__(self, window: int) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ModelError(f"window: expected a positive integer, got {window!r}")
        self._window = window
        self._y = np.zeros(window)  # targets; point number i sits in slot i % window
        self._r = np.zeros(window)  # residuals y_true - y_pred
        self.reset()

    @property
    def window(self) -> int:
        """Number of most recent points the metrics cover."""
        return self._window

    @property
    def count(self) -> int:
        """Number of points in the window now (at most ``window``)."""
        return min(self._n_seen, self._window)

    @property
    def n_seen(self) -> int:
        """Number of points ever added."""
        return self._n_seen

    def reset(self) -> None:
        """Forget every point."""
        self._n_seen = 0
        self._shift = 0.0
        self._d = _Sum()  # sum of (y - shift)
        self._q = _Sum()  # sum of (y - shift)^2
        self._sr = _Sum()  # sum of r^2
        self._sa = _Sum()  # sum of |r|

    # -- updates ----------------------------------------------------------------------------

    def update(self, y_true: float, y_pred: float) -> None:
        """Add one point: its target and the prediction made for it."""
        if not (_is_real(y_true) and _is_real(y_pred)):
            raise ModelError(f"rolling metrics: expected numbers, got {y_true!r} and {y_pred!r}")
        yt, yp = float(y_true), float(y_pred)
        if not (abs(yt) <= MAX_ABS_VALUE and abs(yp) <= MAX_ABS_VALUE):
            raise ModelError(f"rolling metrics: expected finite numbers, got {yt!r} and {yp!r}")
        r = yt - yp
        slot = self._n_seen % self._window
        if self._n_seen >= self._window:
            old_d, old_r = float(self._y[slot]) - self._shift, float(self._r[slot])
        else:
            old_d = old_r = 0.0
        self._y[slot] = yt
        self._r[slot] = r
        self._n_seen += 1
        d = yt - self._shift
        self._d.move(d, abs(d), old_d, abs(old_d), 1)
        self._q.move(d * d, d * d, old_d * old_d, old_d * old_d, 1)
        self._sr.move(r * r, r * r, old_r * old_r, old_r * old_r, 1)
        self._sa.move(abs(r), abs(r), abs(old_r), abs(old_r), 1)

    def update_many(self, y_true: ArrayLike, y_pred: ArrayLike) -> None:
        """Add a batch of points (1-D arrays of targets and predictions), vectorized."""
        yt = _as_values(y_true, "y_true")
        yp = _as_values(y_pred, "y_pred")
        if yt.shape != yp.shape:
            raise ModelError(
                f"rolling metrics: got {yt.shape[0]} targets but {yp.shape[0]} predictions"
            )
        n, w = yt.shape[0], self._window
        if n == 0:
            return
        if n >= w:  # the whole window is replaced
            slots = np.arange(self._n_seen + n - w, self._n_seen + n) % w
            self._y[slots] = yt[n - w :]
            self._r[slots] = yt[n - w :] - yp[n - w :]
            self._n_seen += n
            self._resync()
            return
        slots = np.arange(self._n_seen, self._n_seen + n) % w
        n_out = max(0, self.count + n - w)  # the last n_out slots hold leaving points
        old_d = self._y[slots[n - n_out :]] - self._shift
        old_r = self._r[slots[n - n_out :]]
        r = yt - yp
        self._y[slots] = yt
        self._r[slots] = r
        self._n_seen += n
        d = yt - self._shift
        self._move(self._d, d, old_d, n)
        self._move(self._q, d * d, old_d * old_d, n)
        self._move(self._sr, r * r, old_r * old_r, n)
        self._move(self._sa, np.abs(r), np.abs(old_r), n)

    @staticmethod
    def _move(total: _Sum, new: FloatArray, old: FloatArray, n: int) -> None:
        total.move(
            float(new.sum()),
            float(np.abs(new).sum()),
            float(old.sum()),
            float(np.abs(old).sum()),
            n,
        )

    def _resync(self) -> None:
        """Recompute every sum from the window (and re-center on the window mean)."""
        count = self.count
        y = self._y[:count]
        r = self._r[:count]
        if count == 0:
            self._shift = 0.0
        elif float(np.ptp(y)) == 0.0:
            self._shift = float(y[0])  # constant window: every centered term is exactly 0
        else:
            self._shift = float(y.mean())
        d = y - self._shift
        q = d * d
        r2 = r * r
        abs_r = np.abs(r)
        self._d.set(float(d.sum()), float(np.abs(d).sum()), count)
        self._q.set(float(q.sum()), float(q.sum()), count)
        self._sr.set(float(r2.sum()), float(r2.sum()), count)
        self._sa.set(float(abs_r.sum()), float(abs_r.sum()), count)

    # -- reads ------------------------------------------------------------------------------

    def _sum(self, total: _Sum) -> float:
        if not total.reliable():
            self._resync()
        return total.value

    def _ss_tot(self) -> float:
        n = self.count
        for attempt in range(2):
            d, q = self._d.value, self._q.value
            dd = d * d / n
            ss_tot = q - dd
            bound = (
                self._q.bound
                + (2.0 * abs(d) * self._d.bound + self._d.bound**2) / n
                + 4.0 * _EPS * (q + dd)
            )
            if bound <= RESYNC_TOLERANCE * abs(ss_tot) or attempt:
                return ss_tot
            self._resync()
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def r2(self) -> float | None:
        """1 - SS_res / SS_tot over the window; None if count < 2, every target is equal,
        or the ratio is beyond a double."""
        if self.count < 2:
            return None
        ss_res = self._sum(self._sr)
        ss_tot = self._ss_tot()  # a recomputation here leaves ss_res as accurate as it was
        if ss_tot <= 0.0:
            return None
        r2 = 1.0 - max(ss_res, 0.0) / ss_tot
        return r2 if math.isfinite(r2) else None  # targets' spread too small for a double

    @property
    def rmse(self) -> float | None:
        """Root mean squared residual over the window; None when the window is empty."""
        if self.count == 0:
            return None
        return math.sqrt(max(self._sum(self._sr), 0.0) / self.count)

    @property
    def mae(self) -> float | None:
        """Mean absolute residual over the window; None when the window is empty."""
        if self.count == 0:
            return None
        return max(self._sum(self._sa), 0.0) / self.count

    def snapshot(self) -> MetricsSnapshot:
        """Return count, window, r2, rmse and mae as an immutable, JSON-ready record."""
        return MetricsSnapshot(
            count=self.count, window=self._window, r2=self.r2, rmse=self.rmse, mae=self.mae
        )
