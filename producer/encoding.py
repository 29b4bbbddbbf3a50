"""The ``points`` value of a point: encoded once, with a fast path for float features.

`encode_point` makes the bytes ``json.dumps`` would make for a point of Python
floats, checking what the contract refuses; other numbers (ints, numpy scalars)
go through ``bus.messages``.
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii
from typing import Any

from bus.messages import MAX_ABS_INPUT, MAX_FEATURES, MAX_ID_CHARS, Point, dump_object
from core.errors import MessageError

__all__ = ["encode_point"]

_float_repr = float.__repr__


def encode_point(point: Point, ts: int | None) -> bytes:
    """The ``points`` value of ``point`` with event time ``ts`` (left out when None).

    Float features and labels take a fast path (the bytes ``json.dumps`` would
    make); other numbers (ints, numpy scalars) go through ``bus.messages``.
    What the contract refuses raises ``MessageError``: non-finite numbers or
    numbers beyond ±``MAX_ABS_INPUT``, an empty ``x`` or one with more than
    ``MAX_FEATURES`` features, an id that is empty or longer than ``MAX_ID_CHARS``.
    """
    x, y = point.x, point.y
    try:
        xs = ",".join(map(_float_repr, x))
        ys = "" if y is None else ',"y":' + _float_repr(y)
    except TypeError:
        return _encode_slow(point, ts)
    # A float's repr holds an "n" only when it is nan or inf; '"y":' has none.
    if "n" in xs or "n" in ys or not xs or len(x) > MAX_FEATURES:
        raise MessageError(
            f"point {point.id!r}: x and y must be finite numbers and x not empty "
            f"(at most {MAX_FEATURES} features), got x={_short(x)} y={y!r}"
        )
    if (
        max(x) > MAX_ABS_INPUT
        or min(x) < -MAX_ABS_INPUT
        or (y is not None and not -MAX_ABS_INPUT <= y <= MAX_ABS_INPUT)
    ):
        raise MessageError(
            f"point {point.id!r}: x and y must be within ±{MAX_ABS_INPUT:g}, "
            f"got x={_short(x)} y={y!r}"
        )
    if not 0 < len(point.id) <= MAX_ID_CHARS:
        raise MessageError(
            f"point id {point.id[:40]!r}: expected 1 to {MAX_ID_CHARS} characters, "
            f"got {len(point.id)}"
        )
    ident = encode_basestring_ascii(point.id)
    if ts is None:
        return f'{{"id":{ident},"x":[{xs}]{ys}}}'.encode()
    return f'{{"id":{ident},"x":[{xs}]{ys},"ts":{ts:d}}}'.encode()


def _short(values: list[float]) -> str:
    """At most the first 8 values, for a message."""
    return repr(values) if len(values) <= 8 else repr(values[:8])[:-1] + ", ...]"


def _encode_slow(point: Point, ts: int | None) -> bytes:
    """Validate and encode a point whose numbers are not all Python floats."""
    obj: dict[str, Any] = {"id": point.id, "x": point.x}
    if point.y is not None:
        obj["y"] = point.y
    if ts is not None:
        obj["ts"] = ts
    try:
        checked = Point.from_json(_plain(obj))
    except MessageError as exc:
        raise MessageError(f"point {point.id!r}: {exc}") from None
    return dump_object(checked.to_json())


def _plain(obj: dict[str, Any]) -> dict[str, Any]:
    """Numbers as Python floats (numpy scalars and the like have ``__float__``)."""

    def number(v: Any) -> Any:
        return v if type(v) in (int, float) or not hasattr(v, "__float__") else float(v)

    out = dict(obj)
    out["x"] = [number(v) for v in obj["x"]] if isinstance(obj["x"], list | tuple) else obj["x"]
    if "y" in obj:
        out["y"] = number(obj["y"])
    return out
