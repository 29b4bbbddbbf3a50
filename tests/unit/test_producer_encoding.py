"""The producer's point encoding: the contract's JSON, fast and checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bus.messages import Point
from core.errors import MessageError
from producer.loop import (
    encode_point,
)


@pytest.mark.parametrize(
    "point",
    [
        Point("p-000017", [0.25, -1.5], 3.71),
        Point("p-1", [1e-300, 1e12, -1e12, -0.0], None),
        Point('quote"back\\slash\nnew', [0.1], 2.0),
        Point("unicodé-✓", [3.0], -0.5),
    ],
)
def test_encode_point_is_the_contract_json(point: Point) -> None:
    for ts in (None, 1_700_000_000_123):
        raw = encode_point(point, ts)
        assert json.loads(raw) == {**point.to_json(), **({"ts": ts} if ts else {})}
        back = Point.from_bytes(raw)
        assert (back.id, back.x, back.y, back.ts) == (point.id, point.x, point.y, ts)


def test_encode_point_accepts_ints_and_numpy_numbers() -> None:
    point = Point("n", [1, np.float32(0.5), np.int64(3)], np.float64(2.5))  # type: ignore[list-item]
    assert Point.from_bytes(encode_point(point, 5)) == Point("n", [1.0, 0.5, 3.0], 2.5, 5)


@pytest.mark.parametrize(
    "point",
    [
        Point("a", [float("nan")], 1.0),
        Point("b", [1.0], float("inf")),
        Point("c", [-float("inf"), 1.0]),
        Point("d", []),
        Point("e", [1, float("nan")]),  # the slow path checks too
        Point("f", [1.0, 1.5e12]),
        Point("g", [-2e12]),
        Point("h", [1.0], -1.0000001e12),
        Point("i", [1.0] * 10_001),
        Point("", [1.0]),
        Point("j" * 129, [1.0]),
    ],
)
def test_encode_point_refuses_what_the_contract_refuses(point: Point) -> None:
    with pytest.raises(MessageError, match=repr(point.id[:40])):
        encode_point(point, None)
