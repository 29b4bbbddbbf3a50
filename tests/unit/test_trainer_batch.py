"""The trainer's batch parsing: each value on its own, and every way a record can be rejected."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bus.messages import Point
from core.errors import MessageError
from trainer.batch import parse_points


def _points(n: int, d: int = 2, *, label: bool = True) -> list[bytes | None]:
    rng = np.random.default_rng(n + d)
    out: list[bytes | None] = []
    for i in range(n):
        x = rng.uniform(-1, 1, d).tolist()
        out.append(Point(f"p-{i}", x, float(sum(x)) if label else None).to_bytes())
    return out


def test_plain_batch_becomes_arrays_in_order() -> None:
    values = _points(50, 3)
    parsed = parse_points(values, None)
    assert parsed.rejected == []
    assert parsed.n_features == 3
    assert parsed.x.shape == (50, 3)
    expected = np.array([json.loads(v)["x"] for v in values if v is not None])
    np.testing.assert_array_equal(parsed.x, expected)
    np.testing.assert_array_equal(parsed.y, expected.sum(axis=1))


def test_empty_batch() -> None:
    parsed = parse_points([], 2)
    assert parsed.labelled == 0
    assert parsed.x.shape == (0, 2)


def test_unlabelled_points_are_counted_not_trained() -> None:
    values = _points(5) + _points(4, label=False)
    parsed = parse_points(values, None)
    assert parsed.labelled == 5
    assert parsed.unlabelled == 4
    assert parsed.rejected == []


def test_ints_and_unknown_fields_and_ts_are_fine() -> None:
    values = [b'{"id":"a","x":[1,2],"y":3,"ts":17,"extra":{"k":[true,null]}}']
    parsed = parse_points(values, 2)
    assert parsed.rejected == []
    np.testing.assert_array_equal(parsed.x, [[1.0, 2.0]])


BAD = {
    b"not json": "not JSON",
    b'{"id":"a","x":[1,2],"y":NaN}': "finite",
    b'{"id":"a","x":[1,Infinity],"y":1}': "finite",
    b'{"id":"a","x":[1,1e999],"y":1}': "finite",
    b'{"x":[1,2],"y":1}': "'id'",
    b'{"id":"","x":[1,2],"y":1}': "'id'",
    b'{"id":7,"x":[1,2],"y":1}': "'id'",
    b'{"id":"a","y":1}': "'x'",
    b'{"id":"a","x":[],"y":1}': "'x'",
    b'{"id":"a","x":"12","y":1}': "'x'",
    b'{"id":"a","x":[1,true],"y":1}': "x[1]",
    b'{"id":"a","x":[1,"2"],"y":1}': "x[1]",
    b'{"id":"a","x":[1,2],"y":"1"}': "'y'",
    b'{"id":"a","x":[1,2],"y":false}': "'y'",
    b'{"id":"a","x":[1,2],"y":1,"ts":-5}': "'ts'",
    b'{"id":"a","x":[1,2],"y":1,"ts":1.5}': "'ts'",
    b"[1,2]": "JSON object",
    b'{"id":"a","x":[1,2],"y":1},{"id":"b","x":[1,2],"y":1}': "",
    b"": "",
    b"\xff\xfe": "",
}


@pytest.mark.parametrize("bad", list(BAD), ids=range(len(BAD)))
def test_contract_violations_are_rejected_alone(bad: bytes) -> None:
    values = _points(7)
    values.insert(3, bad)
    parsed = parse_points(values, None)
    assert [i for i, _ in parsed.rejected] == [3]
    assert BAD[bad] in parsed.rejected[0][1]
    with pytest.raises(MessageError) as contract:
        Point.from_bytes(bad)
    assert parsed.rejected[0][1] == str(contract.value)  # the contract's own words
    assert parsed.labelled == 7
    good = [json.loads(v)["x"] for i, v in enumerate(values) if i != 3 and v is not None]
    np.testing.assert_array_equal(parsed.x, good)


def test_tombstone_is_rejected() -> None:
    values = [*_points(3), None]
    parsed = parse_points(values, None)
    assert parsed.rejected == [(3, "expected a JSON object, got an empty value (tombstone)")]
    assert parsed.labelled == 3


def test_wrong_dimension_goes_to_deadletter_with_reason() -> None:
    values = _points(4, 2) + _points(2, 3) + _points(1, 2)
    parsed = parse_points(values, None)
    assert parsed.n_features == 2
    assert [i for i, _ in parsed.rejected] == [4, 5]
    assert "expected 2 features like the stream, got 3" in parsed.rejected[0][1]
    assert parsed.labelled == 5


def test_configured_dimension_wins_over_the_first_point() -> None:
    parsed = parse_points(_points(3, 3) + _points(2, 2), 2)
    assert [i for i, _ in parsed.rejected] == [0, 1, 2]
    assert parsed.x.shape == (2, 2)


def test_unlabelled_points_of_another_dimension_are_not_rejected() -> None:
    parsed = parse_points(_points(3, 2) + _points(2, 5, label=False), None)
    assert parsed.rejected == []
    assert parsed.unlabelled == 2


def test_unlabelled_non_finite_point_is_rejected() -> None:
    values = [*_points(2), b'{"id":"u","x":[1e999, 1]}']
    parsed = parse_points(values, None)
    assert [i for i, _ in parsed.rejected] == [2]
    assert parsed.unlabelled == 0


def test_values_beyond_the_contract_limits_are_rejected() -> None:
    values = [*_points(2), b'{"id":"big","x":[1e13, 1],"y":1}', b'{"id":"y","x":[1,1],"y":-2e12}']
    parsed = parse_points(values, None)
    assert [i for i, _ in parsed.rejected] == [2, 3]
    assert "field 'x': expected numbers within ±1e12" in parsed.rejected[0][1]
    assert "field 'y': expected a number within ±1e12" in parsed.rejected[1][1]
    assert parsed.labelled == 2


def test_values_beyond_what_models_expand_are_rejected() -> None:
    values = [*_points(2), b'{"id":"big","x":[2e6, 1],"y":1}', b'{"id":"y","x":[1,1],"y":3e7}']
    parsed = parse_points(values, None, max_abs_x=1e6, max_abs_y=1e7)
    assert [i for i, _ in parsed.rejected] == [2, 3]
    assert "a feature of magnitude 2e+06 is beyond ±1e+06" in parsed.rejected[0][1]
    assert "field 'y': magnitude 3e+07 is beyond ±1e+07" in parsed.rejected[1][1]
    assert parsed.labelled == 2
    np.testing.assert_array_equal(parsed.y, [sum(json.loads(v or b"")["x"]) for v in values[:2]])


def test_integers_beyond_float_range_are_rejected() -> None:
    huge = str(10**400).encode()
    values = [*_points(2), b'{"id":"h","x":[' + huge + b',1],"y":1}']
    parsed = parse_points(values, None)
    assert [i for i, _ in parsed.rejected] == [2]
    assert parsed.labelled == 2


def test_records_bad_on_their_own_are_rejected_even_when_they_add_up() -> None:
    halves = [b'{"id":"smug-1","y":1.0', b'"x":[0.1,0.2]}']
    two = b'{"id":"a","x":[1,2],"y":1},{"id":"b","x":[1,2],"y":1}'
    values = [*_points(2), *halves, two, *_points(2)]
    parsed = parse_points(values, None)
    assert [i for i, _ in parsed.rejected] == [2, 3, 4]
    assert all("not JSON" in reason for _, reason in parsed.rejected)
    assert parsed.labelled == 4


def test_many_bad_records_scattered() -> None:
    values = _points(200)
    for i in range(0, 200, 17):
        values[i] = b'{"id":"bad","x":[1,2],"y":"no"}' if i % 2 else b"garbage"
    parsed = parse_points(values, None)
    assert [i for i, _ in parsed.rejected] == list(range(0, 200, 17))
    assert parsed.labelled == 200 - len(range(0, 200, 17))


def test_inputs_are_not_modified() -> None:
    values = _points(5)
    copy = list(values)
    parse_points(values, None)
    assert values == copy
