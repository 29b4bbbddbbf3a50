"""Turning a polled batch of ``points`` records into validated columns, and predictions into bytes.

The scorer's hot path. The common case costs one ``json.loads`` for the whole
batch and a few C-speed passes over it (``set(map(type, ...))``, ``min``/``max``,
``map(math.isfinite, ...)``): no Python work per point and no object per point.
When anything looks off, the whole batch is checked record by record with the
contract's own ``Point.from_json``, whose message becomes the dead letter's
reason, so both paths accept and reject exactly the same values.

`encode_predictions` writes the ``predictions`` values directly, byte for byte
what ``Prediction.to_bytes`` writes (compact JSON, ``repr`` floats), at a fraction
of its cost (no dataclass, no dict, no ``json.dumps`` per prediction).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from json.encoder import encode_basestring_ascii
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord

from bus.messages import MAX_FEATURES, MAX_ID_CHARS, MAX_MESSAGE_BYTES, Point
from streamscore.errors import MessageError

_NUMBER = frozenset({int, float})
_LABEL = frozenset({int, float, type(None)})
_TIME = frozenset({int, type(None)})


@dataclass
class PointBatch:
    """The valid points of a batch as columns (with their records), and the invalid records.

    ``x`` rows may hold ints where the JSON had them (numpy makes them floats);
    ``y`` is a float or None, ``ts`` the point's own event time or None.
    """

    records: list[ConsumerRecord] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    x: list[list[float]] = field(default_factory=list)
    y: list[float | None] = field(default_factory=list)
    ts: list[int | None] = field(default_factory=list)
    invalid: list[tuple[ConsumerRecord, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def points(self) -> list[Point]:
        """The valid points as contract objects (built on demand: not on the hot path)."""
        return [
            Point(i, [float(v) for v in x], y, t)
            for i, x, y, t in zip(self.ids, self.x, self.y, self.ts, strict=True)
        ]

    def append(self, record: ConsumerRecord, point: Point) -> None:
        """Add one valid point (the record-by-record path)."""
        self.records.append(record)
        self.ids.append(point.id)
        self.x.append(point.x)
        self.y.append(point.y)
        self.ts.append(point.ts)

    def take(self, keep: Sequence[int]) -> PointBatch:
        """The points at the indexes ``keep`` (invalid records are not carried over)."""
        return PointBatch(
            [self.records[i] for i in keep],
            [self.ids[i] for i in keep],
            [self.x[i] for i in keep],
            [self.y[i] for i in keep],
            [self.ts[i] for i in keep],
        )

    def event_times(self) -> list[int]:
        """Each point's ``ts``, or its record's timestamp when it has none."""
        if None not in self.ts:
            return self.ts  # type: ignore[return-value]
        return [r.timestamp if t is None else t for t, r in zip(self.ts, self.records, strict=True)]


def _bulk_decode(values: Sequence[bytes]) -> list[Any] | None:
    """Decode many JSON values with one ``json.loads``; None when any of them is not plain JSON.

    Joining values with commas inside brackets decodes them all at once. A value
    holding more than one JSON item would change the count, so the count is checked;
    NaN and Infinity make the whole batch fall back to per-record decoding.
    """
    try:
        decoded = json.loads(b"[" + b",".join(values) + b"]", parse_constant=_refuse)
    except (ValueError, RecursionError):
        return None
    return decoded if len(decoded) == len(values) else None


def _refuse(name: str) -> Any:
    raise ValueError(name)


def _columns(
    objs: list[Any],
) -> tuple[list[str], list[list[float]], list[float | None], list[int | None]] | None:
    """The id, x, y and ts columns when every object is plainly a valid point, else None.

    Each check is one C-speed pass over a column; None sends the batch to the
    record-by-record path, which finds and words the problem.
    """
    if set(map(type, objs)) != {dict}:
        return None
    try:
        ids = [o["id"] for o in objs]
        xs = [o["x"] for o in objs]
    except KeyError:
        return None
    ys = [o.get("y") for o in objs]
    ts = [o.get("ts") for o in objs]
    try:
        if set(map(type, ids)) != {str} or set(map(type, xs)) != {list}:
            return None
        if min(map(len, ids)) < 1 or max(map(len, ids)) > MAX_ID_CHARS:
            return None
        if min(map(len, xs)) < 1 or max(map(len, xs)) > MAX_FEATURES:
            return None
        if not _NUMBER.issuperset(map(type, chain.from_iterable(xs))):
            return None
        if not all(map(math.isfinite, chain.from_iterable(xs))):  # 1e999 decodes to inf
            return None
        label_types = set(map(type, ys))
        if not _LABEL.issuperset(label_types):
            return None
        if not all(map(math.isfinite, filter(None, ys))):  # None and 0 are dropped: fine
            return None
        time_types = set(map(type, ts))
        if not _TIME.issuperset(time_types):
            return None
        if int in time_types:
            stamps = [t for t in ts if t is not None] if type(None) in time_types else ts
            if min(stamps) < 0:
                return None
    except OverflowError:  # an integer beyond float range
        return None
    if int in label_types:  # the contract's labels are floats
        ys = [None if y is None else float(y) for y in ys]
    return ids, xs, ys, ts


def parse_points(records: Sequence[ConsumerRecord]) -> PointBatch:
    """Validate every record of a batch against the contract; keep the order of the valid ones."""
    values = [r.value for r in records]
    decoded = None
    if values and None not in values and max(map(len, values)) <= MAX_MESSAGE_BYTES:
        decoded = _bulk_decode(values)
    if decoded is not None:
        columns = _columns(decoded)
        if columns is not None:
            ids, xs, ys, ts = columns
            return PointBatch(list(records), ids, xs, ys, ts)
    batch = PointBatch()
    for i, record in enumerate(records):
        try:
            if decoded is not None and type(decoded[i]) is dict:
                point = Point.from_json(decoded[i])
            else:
                point = Point.from_bytes(record.value)
        except MessageError as exc:
            batch.invalid.append((record, str(exc)))
            continue
        batch.append(record, point)
    return batch


def encode_predictions(
    ids: Sequence[str],
    predictions: Sequence[float],
    ys: Sequence[float | None],
    stamps: Sequence[int],
    *,
    model: str,
    version: int,
) -> list[bytes]:
    """The ``predictions`` values of a batch, as ``Prediction(...).to_bytes()`` writes them.

    ``predictions`` and ``ys`` must be finite Python floats (or None for ``ys``):
    the caller checks the predictions (``Prediction.to_bytes`` raises on NaN).
    """
    middle = f',"model":{encode_basestring_ascii(model)},"version":{version:d},"y":'
    rep = float.__repr__
    labels = map(rep, ys) if None not in ys else ("null" if y is None else rep(y) for y in ys)
    # each column is formatted by one C-level map; the f-string only glues them
    return [
        f'{{"id":{i},"prediction":{p}{middle}{y},"ts":{t}}}'.encode()
        for i, p, y, t in zip(
            map(encode_basestring_ascii, ids),
            map(rep, predictions),
            labels,
            map(int.__repr__, stamps),
            strict=True,
        )
    ]
