"""Drift detection on a stream of numbers: the Page-Hinkley test, as River implements it.

`PageHinkley` watches for an *increase* of the mean of what it is fed (River's
``mode="up"``): fed the absolute residuals of a model, scaled by the model's own
noise level, it fires when the model starts to err more, i.e. when the relation
it learnt no longer holds. The statistics (River's ``drift.PageHinkley``, after
Page 1954): the running mean ``m`` of the values since the last reset,
``S = alpha * S + (x - m - delta)``, its running minimum ``M``, and a drift when
``S - M > threshold`` once ``min_instances`` values were seen. After a drift the
next value starts over (River resets on the next update); `update_many` takes a
whole array at once, vectorized, with the same results up to rounding.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from core.errors import ModelError

#: Values fed at most in one vectorized pass (keeps ``alpha ** -n`` well within range).
_SPAN = 4096

#: Defaults for values of mean about 1 (absolute residuals over their RMS): a drift
#: that doubles the error is found within about 100 points, and a stationary stream
#: of 100,000 points gives no false alarm (tests/unit/test_drift.py).
MIN_INSTANCES = 30
DELTA = 0.1
THRESHOLD = 40.0
ALPHA = 1.0


class PageHinkley:
    """Page-Hinkley test for an increase of the mean; River's semantics, numpy only.

    ``update(x)`` feeds one value and returns True when it completes a drift;
    ``update_many(xs)`` feeds values up to the first drift and returns how many it
    took (``len(xs)`` when none). ``drifts`` counts the drifts found since creation.
    """

    def __init__(
        self,
        min_instances: int = MIN_INSTANCES,
        delta: float = DELTA,
        threshold: float = THRESHOLD,
        alpha: float = ALPHA,
    ) -> None:
        if min_instances < 1 or delta < 0.0 or threshold <= 0.0 or not 0.0 < alpha <= 1.0:
            raise ModelError(
                "PageHinkley: expected min_instances >= 1, delta >= 0, threshold > 0 and "
                f"0 < alpha <= 1; got {min_instances}, {delta}, {threshold}, {alpha}"
            )
        self.min_instances = min_instances
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.drifts = 0
        self.drift_detected = False
        self.reset()

    def reset(self) -> None:
        """Forget every value seen (the drift count stays)."""
        self.n = 0
        self.mean = 0.0
        self.sum = 0.0
        self.min = sys.float_info.max
        self.min_n = 0  # n when the minimum was reached: the change point estimate
        self.drift_detected = False

    @property
    def since_change(self) -> int:
        """Values since the estimated change (the last minimum of the sum; Page 1954)."""
        return self.n - self.min_n

    def update(self, x: float) -> bool:
        """Feed one value; True when a drift is detected with it."""
        if self.drift_detected:
            self.reset()
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.sum = self.alpha * self.sum + (x - self.mean) - self.delta
        if self.sum < self.min:
            self.min, self.min_n = self.sum, self.n
        if self.n >= self.min_instances and self.sum - self.min > self.threshold:
            self.drift_detected = True
            self.drifts += 1
        return self.drift_detected

    def update_many(self, values: ArrayLike) -> int:
        """Feed ``values`` in order up to the first drift; return how many were taken.

        Returns ``len(values)`` when no drift was detected; ``k`` when the k-th value
        (1-based) completed one (`drift_detected` is then True and the rest is not fed).
        """
        xs = np.asarray(values, dtype=np.float64).ravel()
        taken = 0
        while taken < xs.shape[0]:
            if self.drift_detected:
                self.reset()
            span = xs[taken : taken + _SPAN]
            used = self._span(span)
            taken += used
            if self.drift_detected:
                break
        return taken

    def _span(self, xs: np.ndarray[Any, np.dtype[np.float64]]) -> int:
        k = xs.shape[0]
        counts = self.n + np.arange(1, k + 1, dtype=np.float64)
        means = (self.mean * self.n + np.cumsum(xs)) / counts
        steps = xs - means - self.delta
        powers = self.alpha ** np.arange(1, k + 1, dtype=np.float64)
        sums = powers * (self.sum + np.cumsum(steps / powers))
        mins = np.minimum(np.minimum.accumulate(sums), self.min)
        lower = sums < np.concatenate(([self.min], mins[:-1]))
        at = np.maximum.accumulate(np.where(lower, np.arange(1, k + 1), 0))
        hits = np.flatnonzero((counts >= self.min_instances) & (sums - mins > self.threshold))
        used = int(hits[0]) + 1 if hits.size else k
        self.mean = float(means[used - 1])
        self.sum = float(sums[used - 1])
        self.min = float(mins[used - 1])
        if at[used - 1]:
            self.min_n = self.n + int(at[used - 1])
        self.n += used
        if hits.size:
            self.drift_detected = True
            self.drifts += 1
        return used

    def state_dict(self) -> dict[str, Any]:
        """The running statistics as plain numbers (the settings are the owner's)."""
        return {
            "n": self.n,
            "mean": self.mean,
            "sum": self.sum,
            "min": self.min if self.n else None,
            "min_n": self.min_n,
            "drifts": self.drifts,
        }

    def load(self, state: Mapping[str, Any], where: str) -> None:
        """Set the running statistics from `state_dict` output; `ModelError` if bad."""
        try:
            n, drifts, min_n = state["n"], state["drifts"], state["min_n"]
            mean, total, low = float(state["mean"]), float(state["sum"]), state["min"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: bad drift detector state ({exc!r})") from exc
        ints = all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (n, drifts, min_n)
        )
        low_value = sys.float_info.max if low is None else float(low)
        if not ints or not all(map(math.isfinite, (mean, total, low_value))):
            raise ModelError(f"{where}: bad drift detector state {dict(state)!r}")
        self.reset()
        self.n, self.drifts, self.mean, self.sum, self.min = n, drifts, mean, total, low_value
        self.min_n = min_n
