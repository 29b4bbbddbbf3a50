"""Turning a batch of raw ``points`` values into training arrays, with every check.

Each value is decoded and validated on its own by the contract's codec
(`bus.codec.decode_labelled`: the rules and the messages of ``Point.from_bytes``),
never joined to the others. What the trainer adds: labelled points must have the
stream's dimension (``n_features``, learned from the first valid labelled point
when not configured) and values the models can expand (``max_abs_x``,
``max_abs_y``); unlabelled points are only checked against the contract (the
scorer checks them against its model) and are not used for training.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
from numpy.typing import NDArray

from bus.codec import decode_labelled
from bus.messages import MAX_ABS_INPUT

FloatArray = NDArray[np.float64]


@dataclass
class ParsedBatch:
    """The labelled points of a batch as arrays, and the records rejected with reasons."""

    x: FloatArray
    y: FloatArray
    n_features: int | None
    rejected: list[tuple[int, str]] = field(default_factory=list)
    unlabelled: int = 0

    @property
    def labelled(self) -> int:
        """Number of labelled points kept for training."""
        return int(self.y.shape[0])


def parse_points(
    values: Sequence[bytes | None],
    n_features: int | None,
    *,
    max_abs_x: float = math.inf,
    max_abs_y: float = math.inf,
) -> ParsedBatch:
    """Validate a batch of ``points`` values; return the labelled points as arrays.

    ``n_features`` is the stream's dimension (None: the first valid labelled point
    sets it; the result carries it). Labelled points of another dimension, or with a
    feature beyond ``max_abs_x`` or a label beyond ``max_abs_y`` (what the models can
    expand without overflow), are rejected like contract violations. ``rejected``
    holds (position in ``values``, reason) in input order.

    The cyclic garbage collector is paused meanwhile: decoding allocates a list per
    point, which sets off collections that find nothing. Its state is restored.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse(values, n_features, max_abs_x, max_abs_y)
    finally:
        if enabled:
            gc.enable()


def _parse(
    values: Sequence[bytes | None], n_features: int | None, max_abs_x: float, max_abs_y: float
) -> ParsedBatch:
    columns = decode_labelled(values)
    index, xs, ys = columns.index, columns.x, columns.y
    reasons = dict(columns.invalid)
    if n_features is None and xs:
        n_features = len(xs[0])
    d = n_features or 0
    if xs and set(map(len, xs)) != {d}:
        keep = []
        for k, row in enumerate(xs):
            if len(row) == d:
                keep.append(k)
            else:
                reasons[index[k]] = (
                    f"field 'x': expected {d} features like the stream, got {len(row)}"
                )
        index, xs, ys = [index[k] for k in keep], [xs[k] for k in keep], [ys[k] for k in keep]
    n = len(xs)
    x = np.fromiter(chain.from_iterable(xs), np.float64, n * d).reshape(n, d)
    y = np.fromiter(ys, np.float64, n)
    if n and (max_abs_x < MAX_ABS_INPUT or max_abs_y < MAX_ABS_INPUT):
        # the codec keeps every value within ±MAX_ABS_INPUT; a model may take less
        ok = np.abs(y) <= max_abs_y
        if d:
            ok &= np.abs(x).max(axis=1) <= max_abs_x
        if not ok.all():
            for k in np.flatnonzero(~ok).tolist():
                reasons[index[k]] = _range_reason(xs[k], ys[k], max_abs_x, max_abs_y)
            x, y = x[ok], y[ok]
    return ParsedBatch(x, y, n_features, sorted(reasons.items()), columns.unlabelled)


def _range_reason(x: list[float], y: float, max_abs_x: float, max_abs_y: float) -> str:
    biggest = max(map(abs, x), default=0.0)
    if biggest > max_abs_x:
        return (
            f"field 'x': a feature of magnitude {biggest:.3g} is beyond ±{max_abs_x:.3g}, the "
            "largest every configured model can expand; scale the features down"
        )
    return f"field 'y': magnitude {abs(y):.3g} is beyond ±{max_abs_y:.3g}"
