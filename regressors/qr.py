"""Sufficient statistics of least squares: R factors of the augmented design ``[Z | y]``.

`CumulativeQR` keeps every point seen, `WindowQR` the last W points exactly; both
fold rows in by Householder QR (incremental QR), never forming ``Z^T Z``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np

from core.errors import ModelError
from regressors.checks import FloatArray

#: Singular values below ``RCOND`` times the largest one (of the column-scaled
#: R factor) are treated as zero: the solve is then minimum-norm least squares.
RCOND = 1e-10

_CHUNK_ROWS = 8192  # rows per QR update: bounds the memory of one huge batch

# -- sufficient statistics: R factors of the augmented design [Z | y] ---------------------------


def r_factor(a: FloatArray, m: int) -> FloatArray:
    """Return the (m, m) upper-triangular R of the QR of ``a`` (k, m), zero-padded if k < m."""
    # numpy's stubs type every mode of qr as QRResult; mode="r" returns the array R alone
    if a.shape[0] >= m:
        return cast("FloatArray", np.linalg.qr(a, mode="r"))
    out = np.zeros((m, m))
    if a.shape[0]:
        out[: a.shape[0]] = cast("FloatArray", np.linalg.qr(a, mode="r"))
    return out


def solve_r(r_aug: FloatArray) -> FloatArray:
    """Return least-squares coefficients from the R factor of the augmented design ``[Z | y]``.

    ``R^T R = [Z y]^T [Z y]``, so min ||Z w - y|| is min ||R[:p, :p] w - R[:p, p]||. Columns
    are scaled to unit norm (equilibration) and the system is solved by SVD with relative
    cutoff `RCOND`, which gives the minimum-norm solution (in scaled coordinates) when the
    design is rank deficient instead of failing.
    """
    p = r_aug.shape[0] - 1
    r = r_aug[:p, :p]
    scale = np.sqrt(np.einsum("ij,ij->j", r, r))
    scale[scale == 0.0] = 1.0
    try:
        w = np.linalg.lstsq(r / scale, r_aug[:p, p], rcond=RCOND)[0]
    except np.linalg.LinAlgError as exc:  # pragma: no cover - inputs are checked finite
        raise ModelError(f"least-squares solve failed: {exc}") from exc
    theta: FloatArray = w / scale
    return theta


Expander = Callable[[FloatArray, FloatArray], None]


def _augmented(expand: Expander, x: FloatArray, y: FloatArray, m: int) -> FloatArray:
    a = np.empty((x.shape[0], m), order="F")
    expand(x, a[:, : m - 1])
    a[:, m - 1] = y
    return a


class CumulativeQR:
    """Sufficient statistics of every point seen: the R factor of ``[Z | y]``, O(p^2) memory.

    Each batch is folded in exactly by a Householder QR of ``[R; new rows]`` (incremental
    QR), so nothing like ``Z^T Z`` (whose condition number is squared) is ever formed.
    """

    def __init__(self, n_params: int, expand: Expander) -> None:
        self.m = n_params + 1
        self.expand = expand
        self.r = np.zeros((self.m, self.m))
        self.n_seen = 0

    def add(self, x: FloatArray, y: FloatArray) -> None:
        """Fold the rows ``x`` (raw features) with targets ``y`` into R."""
        m = self.m
        for start in range(0, x.shape[0], _CHUNK_ROWS):
            xs = x[start : start + _CHUNK_ROWS]
            a = np.empty((m + xs.shape[0], m), order="F")
            a[:m] = self.r
            self.expand(xs, a[m:, : m - 1])
            a[m:, m - 1] = y[start : start + _CHUNK_ROWS]
            r = r_factor(a, m)
            if not np.isfinite(r).all():  # pragma: no cover - inputs are bounded
                raise ModelError("training statistics overflowed; scale the features down")
            self.r = r
            self.n_seen += xs.shape[0]

    def r_factor(self) -> FloatArray:
        """Return the R factor of ``[Z | y]`` over every point seen."""
        return self.r


class WindowQR:
    """Sufficient statistics of the last ``window`` points, exact (no down-dating).

    The raw rows of the window sit in a ring buffer (point number ``i`` in slot
    ``i % window``), so a point leaving the window is simply no longer used. Point
    numbers are cut into blocks of ``block`` consecutive ones. The window is
    [head: the rest of a block that started before the window] + [complete blocks] +
    [tail: the block being filled]. The tail's R factor is updated as rows arrive and,
    once the block is complete, pushed on a two-stack queue of block R factors that
    keeps the R of all complete blocks at amortized O(p^3) per block (blocks leave
    from the front, arrive at the back). The window's R is the QR of [head rows; queue
    aggregates; tail R]: O((block + 3 p) p^2) work whatever the window size.
    """

    def __init__(self, window: int, n_features: int, n_params: int, expand: Expander) -> None:
        self.window = window
        self.m = n_params + 1
        self.expand = expand
        self.x = np.zeros((window, n_features))
        self.y = np.zeros(window)
        self.n_seen = 0
        self.block = min(window, max(256, 2 * self.m, window // 256))
        self._reset(0)

    def _reset(self, first_point: int) -> None:
        self.first_block = self.end_block = first_point // self.block  # queue: [first, end)
        self.front: list[FloatArray] = []  # front[k]: R of blocks first+len-1-k .. back start
        self.back: list[FloatArray] = []  # R of each block from the back start to end
        self.back_r: FloatArray | None = None  # R of all back blocks
        self.tail_r: FloatArray | None = None  # R of the rows of block end_block so far
        self._r: FloatArray | None = None

    @property
    def start(self) -> int:
        """Number of the oldest point in the window."""
        return max(0, self.n_seen - self.window)

    def _rows(self, lo: int, hi: int) -> tuple[FloatArray, FloatArray]:
        slots = np.arange(lo, hi) % self.window
        return self.x[slots], self.y[slots]

    def _aug(self, lo: int, hi: int) -> FloatArray:
        x, y = self._rows(lo, hi)
        return _augmented(self.expand, x, y, self.m)

    def _combine(self, r1: FloatArray, r2: FloatArray) -> FloatArray:
        return r_factor(np.vstack([r1, r2]), self.m)

    def _push(self, rs: list[FloatArray]) -> None:
        self.back.extend(rs)
        parts = rs if self.back_r is None else [self.back_r, *rs]
        self.back_r = parts[0] if len(parts) == 1 else r_factor(np.vstack(parts), self.m)
        self.end_block += len(rs)

    def _pop(self) -> None:
        if not self.front:  # move the back stack over, with suffix aggregates
            agg: FloatArray | None = None
            for r in reversed(self.back):
                agg = r if agg is None else self._combine(r, agg)
                self.front.append(agg)
            self.back, self.back_r = [], None
        self.front.pop()
        self.first_block += 1

    def _ingest(self, lo: int, hi: int) -> None:
        b, m = self.block, self.m
        if lo % b:  # finish (or extend) the block being filled
            end = min(hi, (lo // b + 1) * b)
            a = self._aug(lo, end)
            r = r_factor(a if self.tail_r is None else np.vstack([self.tail_r, a]), m)
            self.tail_r = None
            if end % b:
                self.tail_r = r
            else:
                self._push([r])
            lo = end
        n_blocks = (hi - lo) // b
        if n_blocks:  # whole blocks: one stacked QR for all of them
            a = self._aug(lo, lo + n_blocks * b).reshape(n_blocks, b, m)
            rs = np.zeros((n_blocks, m, m))  # block R's, zero-padded if block < m rows
            rs[:, : min(b, m)] = cast("FloatArray", np.linalg.qr(a, mode="r"))
            self._push(list(rs))
            lo += n_blocks * b
        if lo < hi:
            self.tail_r = r_factor(self._aug(lo, hi), m)

    def add(self, x: FloatArray, y: FloatArray) -> None:
        """Append rows; those pushed out of the window are dropped."""
        n, w = x.shape[0], self.window
        keep = min(n, w)
        first = self.n_seen
        slots = np.arange(first + n - keep, first + n) % w
        self.x[slots] = x[n - keep :]
        self.y[slots] = y[n - keep :]
        self.n_seen += n
        if n >= w:  # the whole window is new
            self._reset(self.n_seen - w)
            first = self.n_seen - w
        # A block starting before the window was pushed from partial or stale rows at
        # worst; it leaves the queue here, before any use.
        self._ingest(first, self.n_seen)
        while self.first_block < self.end_block and self.first_block * self.block < self.start:
            self._pop()
        self._r = None

    def r_factor(self) -> FloatArray:
        """Return the R factor of ``[Z | y]`` over the points in the window."""
        if self._r is None:
            parts = [self._aug(self.start, max(self.start, self.first_block * self.block))]
            parts += [r for r in (self.back_r, self.tail_r) if r is not None]
            if self.front:
                parts.append(self.front[-1])
            self._r = r_factor(np.vstack(parts), self.m)
        return self._r

    def load(self, x: FloatArray, y: FloatArray, n_seen: int) -> None:
        """Set the window's rows (oldest first) as if ``n_seen`` points had been added."""
        self.n_seen = n_seen - x.shape[0]
        self._reset(self.n_seen)
        self.add(x, y)
