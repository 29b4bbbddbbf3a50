"""Turning a batch of raw ``points`` values into training arrays, fast, with every check.

The common case costs one ``json.loads`` for the whole batch and a handful of
C-speed passes over it (``set(map(type, ...))``, one ``np.array``): no Python
work per point. Only when something looks wrong does it fall back, and only for
the records concerned, to the contract's own per-record validation
(``bus.messages``), whose message becomes the dead letter's reason:

- a batch that is not valid JSON as a whole is split in halves until the bad
  values are isolated (so one bad record costs about two extra decodes of the
  batch, not a per-record decode of all of it);
- a record whose fields fail the batch-wide type checks is validated on its own.

Labelled points must have the stream's dimension (``n_features``, learned from the
first valid labelled point when not configured) and values the models can expand;
unlabelled points are only checked against the contract (the scorer checks them
against its model) and are not used for training.

Limit of the joined decode: the values are joined as they are, and the count of
decoded objects is checked, so a value holding two objects or half of one is
caught, unless records are crafted to make up for each other (one ending in
``{"id":"a",`` and the next starting ``"x":[1],...}`` while a third holds two whole
objects). Such records would be read as points without being dead-lettered; every
point trained on is still a fully validated point.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bus.messages import MAX_FEATURES, MAX_ID_CHARS, MAX_MESSAGE_BYTES, Point, load_object
from streamscore.errors import MessageError

FloatArray = NDArray[np.float64]
Json = dict[str, Any]

_NUMBER = frozenset({int, float})
_LABEL = frozenset({int, float, type(None)})
_TIME = frozenset({int, type(None)})


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


class _NotFiniteError(ValueError):
    """NaN or an infinity in the JSON text: the batch path leaves it to the contract check."""


def _refuse_constant(name: str) -> Any:
    raise _NotFiniteError(name)


def _bulk_decode(values: Sequence[bytes | None]) -> list[Any] | None:
    """Decode values joined into one JSON array; None unless each is exactly one object."""
    try:
        text = (b"[" + b",".join(values) + b"]").decode()  # type: ignore[arg-type]
        decoded = json.loads(text, parse_constant=_refuse_constant)
    except (TypeError, ValueError, RecursionError):  # None value, bad UTF-8/JSON, NaN, ...
        return None
    if len(decoded) != len(values) or set(map(type, decoded)) != {dict}:
        return None
    if max(map(len, values)) > MAX_MESSAGE_BYTES:  # type: ignore[arg-type]
        return None
    objects: list[Any] = decoded
    return objects


def decode_objects(values: Sequence[bytes | None]) -> tuple[list[Json | None], dict[int, str]]:
    """Decode every value to a JSON object: (objects, {index: reason} for the bad ones).

    Bad values are found by bisection, each bad one is decoded on its own by the
    contract's ``load_object`` so its reason is the contract's message.
    """
    objects: list[Json | None] = []
    reasons: dict[int, str] = {}
    stack = [(0, len(values))]
    while stack:
        lo, hi = stack.pop()
        if lo >= hi:
            continue
        decoded = _bulk_decode(values[lo:hi])
        if decoded is not None:
            objects.extend(decoded)
        elif hi - lo == 1:
            try:
                objects.append(load_object(values[lo]))
            except MessageError as exc:
                objects.append(None)
                reasons[lo] = str(exc)
        else:
            mid = (lo + hi) // 2
            stack.append((mid, hi))  # popped second: keeps the order
            stack.append((lo, mid))
    return objects, reasons


def contract_error(obj: Json) -> str | None:
    """Why ``obj`` is not a valid point under the contract, or None if it is."""
    try:
        Point.from_json(obj)
    except MessageError as exc:
        return str(exc)
    except OverflowError:  # an integer too large for a float
        return "field 'x' or 'y': expected a finite number, got an integer beyond float range"
    return None


def _plain_point(obj: Json) -> bool:
    """The batch checks for one object: True when it is plainly a valid point."""
    try:
        ident, x, y, ts = obj["id"], obj["x"], obj.get("y"), obj.get("ts")
        return (
            type(ident) is str
            and 0 < len(ident) <= MAX_ID_CHARS
            and type(x) is list
            and 0 < len(x) <= MAX_FEATURES
            and _NUMBER.issuperset(map(type, x))
            and all(map(math.isfinite, x))
            and type(y) in _LABEL
            and (y is None or math.isfinite(y))
            and type(ts) in _TIME
            and (ts is None or ts >= 0)
        )
    except (KeyError, OverflowError):
        return False


def _columns(objs: list[Json]) -> tuple[list[Any], list[Any]] | None:
    """The ``x`` and ``y`` columns if every object passes the batch-wide checks, else None.

    Each check is a C-speed pass (``set(map(type, ...))``, ``min``/``max``): no Python
    work per point. Finiteness is checked later on the arrays.
    """
    try:
        ids = [o["id"] for o in objs]
        xs = [o["x"] for o in objs]
    except KeyError:
        return None
    ys = [o.get("y") for o in objs]
    times = [o.get("ts") for o in objs]
    if set(map(type, ids)) != {str} or set(map(type, xs)) != {list}:
        return None
    id_lengths = list(map(len, ids))
    x_lengths = list(map(len, xs))
    if min(id_lengths) < 1 or max(id_lengths) > MAX_ID_CHARS:
        return None
    if min(x_lengths) < 1 or max(x_lengths) > MAX_FEATURES:
        return None
    if not _NUMBER.issuperset(map(type, chain.from_iterable(xs))):
        return None
    if not _LABEL.issuperset(map(type, ys)):
        return None
    kinds = set(map(type, times))
    if not _TIME.issuperset(kinds):
        return None
    if int in kinds and min(t for t in times if t is not None) < 0:
        return None
    return xs, ys


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
    expand without overflow), are rejected like contract violations.

    The cyclic garbage collector is paused meanwhile: decoding allocates tens of
    thousands of dicts and lists, which set off collections that find nothing (JSON
    holds no cycles; reference counting frees it all when ``_parse`` returns).
    Pausing roughly halves the cost. The collector's previous state is restored.
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
    objects, reasons = decode_objects(values)
    good = [i for i, o in enumerate(objects) if o is not None]
    objs: list[Json] = [o for o in objects if o is not None]
    columns = _columns(objs) if objs else ([], [])
    if columns is None:  # something is off: check record by record
        keep = []
        for i, obj in zip(good, objs, strict=True):
            error = None if _plain_point(obj) else contract_error(obj)
            if error is None:
                keep.append(i)
            else:
                reasons[i] = error
        good = keep
        objs = [objects[i] for i in keep]  # type: ignore[misc]
        columns = [o["x"] for o in objs], [o.get("y") for o in objs]
    return _arrays(
        objs,
        good,
        columns,
        reasons,
        n_features=n_features,
        max_abs_x=max_abs_x,
        max_abs_y=max_abs_y,
    )


def _arrays(
    objs: list[Json],
    good: list[int],
    columns: tuple[list[Any], list[Any]],
    reasons: dict[int, str],
    *,
    n_features: int | None,
    max_abs_x: float,
    max_abs_y: float,
) -> ParsedBatch:
    """Labelled rows of the stream's dimension as arrays; the other rows checked and rejected."""
    xs, ys = columns
    labelled: Sequence[int] = range(len(ys))
    unlabelled = 0
    if None in ys:
        labelled = [k for k, y in enumerate(ys) if y is not None]
        unlabelled = len(ys) - len(labelled)
        # Unlabelled points are not trained on; they only have to be finite numbers.
        for k in sorted(set(range(len(ys))).difference(labelled)):
            try:
                finite = all(map(math.isfinite, xs[k]))
            except OverflowError:
                finite = False
            if not finite:
                reasons[good[k]] = contract_error(objs[k]) or "field 'x': not finite"
                unlabelled -= 1
        xs = [xs[k] for k in labelled]
    if n_features is None and xs:
        n_features = len(xs[0])
    d = n_features or 0
    if xs and set(map(len, xs)) != {d}:
        same = []
        for k, row in zip(labelled, xs, strict=True):
            if len(row) == d:
                same.append(k)
            else:
                reasons[good[k]] = (
                    f"field 'x': expected {d} features like the stream, got {len(row)}"
                )
        labelled = same
        xs = [objs[k]["x"] for k in labelled]

    try:
        x = np.array(xs, dtype=np.float64).reshape(len(xs), d)
        y = np.array([ys[k] for k in labelled], dtype=np.float64)
    except OverflowError:  # an integer beyond float range somewhere
        fits = []
        for k in labelled:
            error = contract_error(objs[k])
            if error is None:
                fits.append(k)
            else:
                reasons[good[k]] = error
        labelled = fits
        x = np.array([objs[k]["x"] for k in labelled], dtype=np.float64).reshape(len(fits), d)
        y = np.array([ys[k] for k in labelled], dtype=np.float64)

    ok = np.isfinite(y) & (np.abs(y) <= max_abs_y)
    if d:
        ok &= np.isfinite(x).all(axis=1)
        if x.shape[0]:
            ok &= np.abs(x).max(axis=1) <= max_abs_x
    if not ok.all():
        for k in np.flatnonzero(~ok).tolist():
            obj = objs[labelled[k]]
            reasons[good[labelled[k]]] = contract_error(obj) or _range_reason(
                obj, max_abs_x, max_abs_y
            )
        x, y = x[ok], y[ok]
    return ParsedBatch(x, y, n_features, sorted(reasons.items()), unlabelled)


def _range_reason(obj: Json, max_abs_x: float, max_abs_y: float) -> str:
    biggest = max(abs(float(v)) for v in obj["x"])
    if biggest > max_abs_x:
        return (
            f"field 'x': a feature of magnitude {biggest:.3g} is beyond ±{max_abs_x:.3g}, the "
            "largest every configured model can expand; scale the features down"
        )
    return f"field 'y': magnitude {abs(float(obj['y'])):.3g} is beyond ±{max_abs_y:.3g}"
