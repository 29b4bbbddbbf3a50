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

With ``detect`` the residuals of the *combined* model are watched: every `refresh`
rows (over all streams) the model is solved (reference coefficients and residual
scale, both from rows before the next ones), and ``|residual| / scale`` of each new
row is fed to one `regressors.drift.PageHinkley`. On a drift every stream forgets
every row so far, so the next fit is on the new regime only. Watching the combined
model, not each stream on its own, matters when partitions are not used at once:
a producer that fills one partition at a time (Kafka's sticky partitioner) gives
streams that each hold one regime only, so no stream ever changes on its own, yet
the model mixes the old partitions with the new. Without a drift the fit is a
function of each stream's own rows (exact on restart); the row at which a drift is
found depends on how the streams interleave.
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
    """One stream's forgetting R factor."""

    def __init__(self, m: int) -> None:
        self.r = np.zeros((m, m))
        self.weight = 0.0  # sum of the row weights in r
        self.n_seen = 0


class _Watch:
    """The drift watch of the combined model: its reference and its detector."""

    def __init__(self) -> None:
        self.theta: FloatArray | None = None  # reference coefficients for residuals
        self.scale = 0.0
        self.since = 0  # rows added since the reference was solved
        self.detector = PageHinkley()

    def state(self) -> dict[str, Any]:
        return {
            "theta": None if self.theta is None else self.theta.tolist(),
            "scale": self.scale,
            "since": self.since,
            "detector": self.detector.state_dict(),
        }


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
        self.watch = _Watch()
        self.n_seen = 0
        self._r: FloatArray | None = None

    @property
    def drifts(self) -> int:
        """Drifts detected since the start."""
        return self.watch.detector.drifts

    @property
    def weight(self) -> float:
        """The sum of the row weights over every stream."""
        return sum(s.weight for s in self.streams.values())

    def _design(self, x: FloatArray, y: FloatArray) -> FloatArray:
        a = np.empty((x.shape[0], self.m), order="F")
        self.expand(x, a[:, : self.m - 1])
        a[:, self.m - 1] = y
        return a

    def add(self, x: FloatArray, y: FloatArray, stream: int = 0) -> None:
        """Fold the rows ``x`` with targets ``y`` of ``stream`` in, in order."""
        s = self.streams.get(stream)
        if s is None:
            s = self.streams[stream] = _Stream(self.m)
        watch = self.watch
        start = 0
        while start < x.shape[0]:
            take = min(x.shape[0] - start, max(self.refresh - watch.since, 1))
            xs, ys = x[start : start + take], y[start : start + take]
            if self.detect and watch.theta is not None:
                used = self._watch(xs, ys)
                if watch.detector.drift_detected:  # forget all, this row included
                    self._restart()
                    s.n_seen += used
                    start += used
                    continue
            self._fold(s, xs, ys)
            start += take
            if watch.since >= self.refresh:
                self._reference()
        self.n_seen += x.shape[0]

    def _watch(self, x: FloatArray, y: FloatArray) -> int:
        """Feed the scaled residuals of the reference to the detector; rows taken."""
        watch = self.watch
        assert watch.theta is not None
        a = self._design(x, y)
        residual = np.abs(a[:, : self.m - 1] @ watch.theta - y) / watch.scale
        return watch.detector.update_many(np.minimum(residual, CLIP))

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
        s.n_seen += k
        self.watch.since += k
        self._r = None

    def _reference(self) -> None:
        """New reference coefficients and residual scale of the combined model."""
        watch = self.watch
        watch.since = 0
        weight = self.weight
        p = self.m - 1
        if not self.detect or weight < 2 * self.m:
            watch.theta = None
            return
        r = self.r_factor()
        watch.theta = solve_r(r)
        sse = float(r[p, p] ** 2)
        y_ms = float(np.sum(r[:, p] ** 2)) / weight
        floor = 1e-8 * math.sqrt(y_ms) + 1e-300
        watch.scale = max(math.sqrt(sse / max(weight - p, 1.0)), floor)

    def _restart(self) -> None:
        """After a drift: every stream forgets every row so far and learns anew.

        Rows between the change and its detection are lost too (a few dozen): the
        change point is only known a few rows either way, and one row of the old
        regime weighs like many of the new (its residual is large). Keeping none
        makes the result independent of how the rows were cut into batches.
        """
        for s in self.streams.values():
            s.r = np.zeros((self.m, self.m))
            s.weight = 0.0
        watch = self.watch
        watch.theta, watch.since = None, 0
        watch.detector.reset()
        self._r = None

    def r_factor(self) -> FloatArray:
        """Return the R factor of ``[Z | y]`` over every stream, rows weighted."""
        if self._r is None:
            parts = [s.r for s in self.streams.values()]
            self._r = parts[0] if len(parts) == 1 else r_factor(np.vstack(parts), self.m)
        return self._r

    # -- saving ---------------------------------------------------------------------------

    def state(self) -> list[dict[str, Any]]:
        """Every stream's state as plain numbers (see `load`)."""
        return [
            {
                "stream": key,
                "n_seen": s.n_seen,
                "weight": s.weight,
                "r": [s.r[i, i:].tolist() for i in range(self.m)],
            }
            for key, s in sorted(self.streams.items())
        ]

    def watch_state(self) -> dict[str, Any]:
        """The drift watch's state as plain numbers (see `load`)."""
        return self.watch.state()

    def load(self, streams: object, watch: object, n_seen: int, where: str) -> None:
        """Restore `state` and `watch_state` output; raise `ModelError` if anything is off."""
        if not isinstance(streams, list):
            raise ModelError(f"{where}: 'streams' must be a list, got {type_name(streams)}")
        self.streams = {}
        for i, item in enumerate(streams):
            if not isinstance(item, Mapping):
                raise ModelError(f"{where}: 'streams'[{i}] must be an object")
            key = get_int(item, "stream", where, minimum=0)
            self.streams[key] = self._load_stream(item, f"{where}: stream {key}")
        self.watch = self._load_watch(watch, f"{where}: watch")
        self.n_seen = n_seen
        self._r = None

    def _load_stream(self, item: Mapping[str, Any], where: str) -> _Stream:
        m = self.m
        s = _Stream(m)
        s.n_seen = get_int(item, "n_seen", where, minimum=0)
        s.weight = numbers([get_key(item, "weight", where)], where, "'weight'", 1, "weight")[0]
        rows = get_key(item, "r", where)
        if not isinstance(rows, list) or len(rows) != m:
            raise ModelError(f"{where}: 'r' must be a list of {m} rows")
        for i, row in enumerate(rows):
            s.r[i, i:] = numbers(row, where, f"'r'[{i}]", m - i, "numbers (upper triangle)")
        return s

    def _load_watch(self, item: object, where: str) -> _Watch:
        watch = _Watch()
        if item is None:  # a state saved before the watch was kept: it starts over
            return watch
        if not isinstance(item, Mapping):
            raise ModelError(f"{where}: must be an object, got {type_name(item)}")
        watch.since = get_int(item, "since", where, minimum=0)
        theta = get_key(item, "theta", where)
        if theta is not None:
            watch.theta = np.array(numbers(theta, where, "'theta'", self.m - 1, "coefficients"))
            watch.scale = numbers([get_key(item, "scale", where)], where, "'scale'", 1, "scale")[0]
            if not watch.scale > 0.0:
                raise ModelError(f"{where}: 'scale' must be positive, got {watch.scale}")
        detector = get_key(item, "detector", where)
        if not isinstance(detector, Mapping):
            raise ModelError(f"{where}: 'detector' must be an object")
        watch.detector.load(detector, where)
        return watch
