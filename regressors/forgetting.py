"""Exponentially forgetting least squares, one stream at a time, with drift detection.

`ForgettingQR` keeps, for each stream (a partition of the input, in the trainer),
the R factor of ``[Z | y]`` with every older row down-weighted by the forgetting
factor ``lam`` per newer row of that stream: the fit minimizes
``sum_i lam**age_i (z_i . w - y_i)**2`` (recursive least squares with forgetting,
exact, by Householder QR: no ``P`` matrix to lose its symmetry). The weight of a
row depends only on the rows of its own stream after it, so the result does not
depend on how streams interleave: a trainer restarted on several partitions ends
where an uninterrupted one does. The model is the least-squares fit over every
stream's R together. ``1 / (1 - lam)`` is the effective memory, in points per stream.

With ``detect`` each stream also watches its prequential residuals: every `refresh`
points it solves its own R (reference coefficients and residual scale, both from
points before the block), and feeds ``|residual| / scale`` of the next block to a
`regressors.drift.PageHinkley`. On a drift the stream forgets every row so far,
so the next fit is on the new regime only. All of it
is a function of the stream's own rows: exact on restart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from core.errors import ModelError
from regressors.checks import FloatArray, get_int, get_key, numbers, type_name
from regressors.drift import PageHinkley
from regressors.qr import r_factor, solve_r

Expander = Callable[[FloatArray, FloatArray], None]

#: Default forgetting factor: an effective memory of 2,000 points per stream.
DEFAULT_FORGET = 0.9995

#: Scaled residuals are clipped here before the test: one outlier (heavy-tailed noise)
#: weighs at most this much, while a drift raises many residuals at once.
CLIP = 3.0

#: Points per detection block: at least this, and at least 4 per coefficient.
MIN_REFRESH = 256


def check_forget(forget: object) -> float | None:
    """Return ``forget`` (None, or a factor in (0, 1]) or raise `ModelError`."""
    if forget is None:
        return None
    if isinstance(forget, bool) or not isinstance(forget, (int, float)):
        raise ModelError(f"forget: expected a number in (0, 1] or None, got {forget!r}")
    if not 0.0 < float(forget) <= 1.0:
        raise ModelError(
            f"forget: expected a factor in (0, 1], e.g. 0.9995 (a memory of 2000 points), "
            f"got {forget!r}"
        )
    return float(forget)


class _Stream:
    """One stream's forgetting R factor, its current block and its drift detector."""

    def __init__(self, m: int, n_features: int, refresh: int) -> None:
        self.r = np.zeros((m, m))
        self.weight = 0.0  # sum of the row weights in r
        self.n_seen = 0
        self.block_x = np.zeros((refresh, n_features))  # rows since the block started
        self.block_y = np.zeros(refresh)
        self.in_block = 0
        self.theta: FloatArray | None = None  # reference coefficients for residuals
        self.scale = 0.0
        self.detector = PageHinkley()


class ForgettingQR:
    """Sufficient statistics with exponential forgetting per stream (see the module doc)."""

    def __init__(
        self, n_features: int, n_params: int, expand: Expander, forget: float, detect: bool
    ) -> None:
        self.m = n_params + 1
        self.n_features = n_features
        self.expand = expand
        self.forget = forget
        self.detect = detect
        self.refresh = max(MIN_REFRESH, 4 * self.m)
        self.streams: dict[int, _Stream] = {}
        self.n_seen = 0
        self._r: FloatArray | None = None

    @property
    def drifts(self) -> int:
        """Drifts detected over every stream since the start."""
        return sum(s.detector.drifts for s in self.streams.values())

    def _design(self, x: FloatArray, y: FloatArray) -> FloatArray:
        a = np.empty((x.shape[0], self.m), order="F")
        self.expand(x, a[:, : self.m - 1])
        a[:, self.m - 1] = y
        return a

    def add(self, x: FloatArray, y: FloatArray, stream: int = 0) -> None:
        """Fold the rows ``x`` with targets ``y`` of ``stream`` in, in order."""
        s = self.streams.get(stream)
        if s is None:
            s = self.streams[stream] = _Stream(self.m, self.n_features, self.refresh)
        start = 0
        while start < x.shape[0]:
            take = min(x.shape[0] - start, self.refresh - s.in_block)
            xs, ys = x[start : start + take], y[start : start + take]
            if self.detect and s.theta is not None:
                used = self._watch(s, xs, ys)
                if s.detector.drift_detected:  # forget all, this row included
                    s.n_seen += used
                    self._restart(s)
                    start += used
                    continue
            self._fold(s, xs, ys)
            start += take
            if s.in_block == self.refresh:
                self._end_block(s)
        self.n_seen += x.shape[0]
        self._r = None

    def _watch(self, s: _Stream, x: FloatArray, y: FloatArray) -> int:
        assert s.theta is not None
        a = self._design(x, y)
        residual = np.abs(a[:, : self.m - 1] @ s.theta - y) / s.scale
        return s.detector.update_many(np.minimum(residual, CLIP))

    def _fold(self, s: _Stream, x: FloatArray, y: FloatArray) -> None:
        k = x.shape[0]
        if not k:
            return
        lam = self.forget
        a = self._design(x, y)
        if lam != 1.0:
            a *= np.sqrt(lam ** np.arange(k - 1, -1, -1, dtype=np.float64))[:, None]
        old = s.r * math.sqrt(lam**k) if lam != 1.0 else s.r
        r = r_factor(np.vstack([old, a]), self.m)
        if not np.isfinite(r).all():  # pragma: no cover - inputs are bounded
            raise ModelError("training statistics overflowed; scale the features down")
        s.r = r
        s.weight = s.weight * lam**k + float(np.sum(lam ** np.arange(k, dtype=np.float64)))
        s.block_x[s.in_block : s.in_block + k] = x
        s.block_y[s.in_block : s.in_block + k] = y
        s.in_block += k
        s.n_seen += k

    def _end_block(self, s: _Stream) -> None:
        """A block is complete: new reference coefficients and scale for the next one."""
        s.in_block = 0
        p = self.m - 1
        if not self.detect or s.weight < 2 * self.m:
            s.theta = None
            return
        s.theta = solve_r(s.r)
        sse = float(s.r[p, p] ** 2)
        y_ms = float(np.sum(s.r[:, p] ** 2)) / s.weight
        floor = 1e-8 * math.sqrt(y_ms) + 1e-300
        s.scale = max(math.sqrt(sse / max(s.weight - p, 1.0)), floor)

    def _restart(self, s: _Stream) -> None:
        """After a drift: the stream forgets every row so far and learns anew.

        Rows between the change and its detection are lost too (a few dozen): the
        change point is only known a few rows either way, and one row of the old
        regime weighs like many of the new (its residual is large).
        """
        s.r = np.zeros((self.m, self.m))
        s.weight, s.in_block, s.theta = 0.0, 0, None
        s.detector.reset()

    def r_factor(self) -> FloatArray:
        """Return the R factor of ``[Z | y]`` over every stream, rows weighted."""
        if self._r is None:
            parts = [s.r for s in self.streams.values()]
            self._r = parts[0] if len(parts) == 1 else r_factor(np.vstack(parts), self.m)
        return self._r

    # -- saving ---------------------------------------------------------------------------

    def state(self) -> list[dict[str, Any]]:
        """Every stream's state as plain numbers (see `load`)."""
        out = []
        for key, s in sorted(self.streams.items()):
            out.append(
                {
                    "stream": key,
                    "n_seen": s.n_seen,
                    "weight": s.weight,
                    "r": [s.r[i, i:].tolist() for i in range(self.m)],
                    "block_x": s.block_x[: s.in_block].tolist(),
                    "block_y": s.block_y[: s.in_block].tolist(),
                    "theta": None if s.theta is None else s.theta.tolist(),
                    "scale": s.scale,
                    "detector": s.detector.state_dict(),
                }
            )
        return out

    def load(self, streams: object, n_seen: int, where: str) -> None:
        """Restore `state` output; raise `ModelError` if anything is off."""
        if not isinstance(streams, list):
            raise ModelError(f"{where}: 'streams' must be a list, got {type_name(streams)}")
        self.streams = {}
        for i, item in enumerate(streams):
            if not isinstance(item, Mapping):
                raise ModelError(f"{where}: 'streams'[{i}] must be an object")
            key = get_int(item, "stream", where, minimum=0)
            self.streams[key] = self._load_stream(item, f"{where}: stream {key}")
        self.n_seen = n_seen
        self._r = None

    def _load_stream(self, item: Mapping[str, Any], where: str) -> _Stream:
        m, d = self.m, self.n_features
        s = _Stream(m, d, self.refresh)
        s.n_seen = get_int(item, "n_seen", where, minimum=0)
        s.weight = numbers([get_key(item, "weight", where)], where, "'weight'", 1, "weight")[0]
        rows = get_key(item, "r", where)
        if not isinstance(rows, list) or len(rows) != m:
            raise ModelError(f"{where}: 'r' must be a list of {m} rows")
        for i, row in enumerate(rows):
            s.r[i, i:] = numbers(row, where, f"'r'[{i}]", m - i, "numbers (upper triangle)")
        block_y = get_key(item, "block_y", where)
        count = len(block_y) if isinstance(block_y, list) else -1
        if not 0 <= count < self.refresh:
            raise ModelError(f"{where}: 'block_y' must be a list of fewer than {self.refresh}")
        s.block_y[:count] = numbers(block_y, where, "'block_y'", count, "targets")
        block_x = get_key(item, "block_x", where)
        if not isinstance(block_x, list) or len(block_x) != count:
            raise ModelError(f"{where}: 'block_x' must be a list of {count} rows")
        for i, row in enumerate(block_x):
            s.block_x[i] = numbers(row, where, f"'block_x'[{i}]", d, "features")
        s.in_block = count
        theta = get_key(item, "theta", where)
        if theta is not None:
            s.theta = np.array(numbers(theta, where, "'theta'", m - 1, "coefficients"))
            s.scale = numbers([get_key(item, "scale", where)], where, "'scale'", 1, "scale")[0]
            if not s.scale > 0.0:
                raise ModelError(f"{where}: 'scale' must be positive, got {s.scale}")
        detector = get_key(item, "detector", where)
        if not isinstance(detector, Mapping):
            raise ModelError(f"{where}: 'detector' must be an object")
        s.detector.load(detector, where)
        return s
