"""The trainer's checkpoint: what it has learned and read, as plain JSON numbers.

A checkpoint is written to the compacted ``trainer_state`` topic in the same
transaction as the model versions it goes with and the consumer offsets, so all
three are committed together or not at all. Its value is one JSON object::

    {"format": 1, "group": "streamscore-trainer", "points_topic": "points",
     "seq": 17, "created_at": 1700000000000, "n_features": 2, "count": 12000,
     "offsets": {"0": 4000, "1": 4100, "2": 3900},
     "versions": {"multivariate": 12, "polynomial": 12},
     "deadletters": 3,
     "models": {"multivariate": <Regressor.state_dict()>, "polynomial": ...}}

``offsets`` are the next offset to read per partition of ``points``; ``count`` the
labelled points trained on; ``versions`` the last version published per model name.

Key: the trainer's group id. A checkpoint larger than `PART_BYTES` (a big window,
or a model with hundreds of coefficients) is cut into parts: part 0 under the
group id, part i under ``<group>#<i>``, each record with the headers
``checkpoint-seq``, ``checkpoint-part`` and ``checkpoint-parts``; the value is the
parts' bytes concatenated. Parts left over from an earlier, larger checkpoint are
deleted (tombstones) in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import StreamscoreError

CHECKPOINT_FORMAT = 1
PART_BYTES = 512 * 1024

Headers = list[tuple[str, bytes]]
Record = tuple[bytes, bytes | None, Headers]  # key, value (None: tombstone), headers


class StateError(StreamscoreError):
    """The trainer's checkpoint cannot be read or does not fit the configuration."""


@dataclass
class Checkpoint:
    """Everything a restarted trainer needs to continue exactly where this one stopped."""

    group: str
    points_topic: str
    seq: int = 0
    created_at: int = 0
    n_features: int | None = None
    count: int = 0
    offsets: dict[int, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    deadletters: int = 0
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object (plain numbers only)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "group": self.group,
            "points_topic": self.points_topic,
            "seq": self.seq,
            "created_at": self.created_at,
            "n_features": self.n_features,
            "count": self.count,
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
            "versions": dict(sorted(self.versions.items())),
            "deadletters": self.deadletters,
            "models": self.models,
        }

    def to_bytes(self) -> bytes:
        """Compact JSON; floats are written exactly (shortest repr that round-trips)."""
        return json.dumps(self.to_json(), separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Checkpoint:
        """Parse and check a checkpoint value; raise StateError when it is unusable."""
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise StateError(f"checkpoint is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise StateError("checkpoint is not a JSON object")
        if obj.get("format") != CHECKPOINT_FORMAT:
            raise StateError(
                f"checkpoint format {obj.get('format')!r} is not {CHECKPOINT_FORMAT}; "
                "was it written by another streamscore version?"
            )
        try:
            return cls(
                group=_text(obj["group"], "group"),
                points_topic=_text(obj["points_topic"], "points_topic"),
                seq=_count(obj["seq"], "seq"),
                created_at=_count(obj["created_at"], "created_at"),
                n_features=None if obj["n_features"] is None else _count(obj["n_features"], "n"),
                count=_count(obj["count"], "count"),
                offsets={
                    _count(int(p), "partition"): _count(o, "offset")
                    for p, o in _mapping(obj["offsets"], "offsets").items()
                },
                versions={
                    _text(n, "model"): _count(v, "version")
                    for n, v in _mapping(obj["versions"], "versions").items()
                },
                deadletters=_count(obj["deadletters"], "deadletters"),
                models={
                    _text(n, "model"): dict(_mapping(s, f"models.{n}"))
                    for n, s in _mapping(obj["models"], "models").items()
                },
            )
        except KeyError as exc:
            raise StateError(f"checkpoint has no {exc.args[0]!r}") from None
        except ValueError as exc:
            raise StateError(f"checkpoint is malformed: {exc}") from None


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {value!r}")
    return value


def _count(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {value!r}")
    return value


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object, got {type(value).__name__}")
    return value


def part_key(group: str, part: int) -> bytes:
    """The record key of part ``part`` of the group's checkpoint."""
    return (group if part == 0 else f"{group}#{part}").encode()


def encode_checkpoint(
    checkpoint: Checkpoint, previous_parts: int = 0, part_bytes: int = PART_BYTES
) -> list[Record]:
    """The records that store ``checkpoint`` (and delete stale parts of the previous one)."""
    raw = checkpoint.to_bytes()
    pieces = [raw[i : i + part_bytes] for i in range(0, len(raw), part_bytes)] or [b""]
    parts = len(pieces)
    records: list[Record] = []
    for i, piece in enumerate(pieces):
        headers = [
            ("checkpoint-seq", str(checkpoint.seq).encode()),
            ("checkpoint-part", str(i).encode()),
            ("checkpoint-parts", str(parts).encode()),
        ]
        records.append((part_key(checkpoint.group, i), piece, headers))
    for i in range(parts, previous_parts):
        records.append((part_key(checkpoint.group, i), None, []))
    return records


def _header(headers: Headers, name: str) -> int:
    for key, value in headers:
        if key == name:
            try:
                return int(value)
            except (TypeError, ValueError):
                break
    raise StateError(f"checkpoint record has no valid {name!r} header")


def assemble_checkpoint(
    latest: Mapping[bytes, tuple[bytes | None, Headers]], group: str
) -> tuple[Checkpoint | None, int]:
    """The group's checkpoint from the latest record of each key, and its number of parts.

    ``latest`` maps each key of ``trainer_state`` to its last (value, headers).
    Returns (None, 0) when the group has no checkpoint (or it was deleted).
    """
    first = latest.get(part_key(group, 0))
    if first is None or first[0] is None:
        return None, 0
    value: bytes = first[0]
    headers = first[1]
    seq, parts = _header(headers, "checkpoint-seq"), _header(headers, "checkpoint-parts")
    pieces = [value]
    for i in range(1, parts):
        entry = latest.get(part_key(group, i))
        piece = None if entry is None else entry[0]
        if entry is None or piece is None or _header(entry[1], "checkpoint-seq") != seq:
            raise StateError(
                f"checkpoint {seq} of group {group!r}: part {i} of {parts} is missing; "
                "was the trainer_state topic altered by hand?"
            )
        pieces.append(piece)
    checkpoint = Checkpoint.from_bytes(b"".join(pieces))
    if checkpoint.group != group or checkpoint.seq != seq:
        raise StateError(f"checkpoint under key {group!r} belongs to {checkpoint.group!r}")
    return checkpoint, parts
