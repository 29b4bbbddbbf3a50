"""Turning a polled batch of ``points`` records into validated points, fast."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord

from bus.messages import MAX_MESSAGE_BYTES, Point
from streamscore.errors import MessageError


@dataclass
class PointBatch:
    """The valid points of a batch with their records, and the invalid records with reasons."""

    records: list[ConsumerRecord] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    invalid: list[tuple[ConsumerRecord, str]] = field(default_factory=list)


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


def parse_points(records: Sequence[ConsumerRecord]) -> PointBatch:
    """Validate every record of a batch against the contract; keep the order of the valid ones."""
    batch = PointBatch()
    plain = [r for r in records if r.value is not None and len(r.value) <= MAX_MESSAGE_BYTES]
    decoded = _bulk_decode([r.value for r in plain]) if len(plain) == len(records) else None
    for i, record in enumerate(records):
        try:
            if decoded is not None and type(decoded[i]) is dict:
                point = Point.from_json(decoded[i])
            else:
                point = Point.from_bytes(record.value)
        except MessageError as exc:
            batch.invalid.append((record, str(exc)))
            continue
        batch.records.append(record)
        batch.points.append(point)
    return batch
