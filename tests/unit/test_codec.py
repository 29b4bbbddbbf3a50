"""The columnar codec: decodes and encodes exactly as the contract classes do, value by value."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bus.codec import decode_labelled, decode_points, encode_predictions
from bus.messages import (
    MAX_ABS_INPUT,
    MAX_FEATURES,
    MAX_ID_CHARS,
    MAX_MESSAGE_BYTES,
    MAX_NESTING,
    Point,
    Prediction,
)
from core.errors import MessageError

Outcome = tuple[str, Any]  # ("ok", fingerprint of the point) or ("error", reason)


def fingerprint(point: Point) -> tuple[Any, ...]:
    """A point's fields with exact floats (repr tells -0.0 from 0.0, and float from int)."""
    return (
        point.id,
        [(type(v), repr(v)) for v in point.x],
        (type(point.y), repr(point.y)),
        point.ts,
    )


def reference(value: bytes | None) -> Outcome:
    """What the contract says of one value."""
    try:
        return ("ok", fingerprint(Point.from_bytes(value)))
    except MessageError as exc:
        return ("error", str(exc))


def codec_outcomes(values: list[bytes | None]) -> list[Outcome]:
    """What decode_points says of each value of a batch, in input order."""
    columns = decode_points(values)
    out: list[Outcome | None] = [None] * len(values)
    for k, point in zip(columns.index, columns.points(), strict=True):
        out[k] = ("ok", fingerprint(point))
    for k, reason in columns.invalid:
        assert out[k] is None, f"value {k} is both valid and invalid"
        out[k] = ("error", reason)
    assert None not in out, "a value is neither valid nor invalid"
    assert columns.index == sorted(columns.index)
    return out  # type: ignore[return-value]


# --- values of every class ---------------------------------------------------------------

bounded = st.floats(min_value=-MAX_ABS_INPUT, max_value=MAX_ABS_INPUT)
numbers = st.one_of(
    bounded,
    st.integers(min_value=-(10**12), max_value=10**12),
    st.sampled_from([0.0, -0.0, 1e12, -1e12, 5e-324, 9.99e-5, 1e-4, 0.1, 2.5e-308, 1e16 / 1e5]),
)
beyond = st.one_of(
    st.floats(min_value=MAX_ABS_INPUT, exclude_min=True, allow_infinity=False),
    st.floats(max_value=-MAX_ABS_INPUT, exclude_max=True, allow_infinity=False),
    st.integers(min_value=10**12 + 1, max_value=10**300),
    st.sampled_from([math.nextafter(1e12, math.inf), 1e40, -(10**13)]),
)
ids = st.one_of(
    st.text(min_size=1, max_size=MAX_ID_CHARS),
    st.text(alphabet="p-0123456789", min_size=1, max_size=12),
    st.sampled_from(["é" * MAX_ID_CHARS, "😀" * MAX_ID_CHARS, 'quote"back\\slash', "\x7f\x00\n"]),
)
junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
point_objects = st.fixed_dictionaries(
    {"id": ids, "x": st.lists(numbers, min_size=1, max_size=8)},
    optional={
        "y": st.none() | numbers,
        "ts": st.none() | st.integers(min_value=0, max_value=2**70),
        "extra": junk,
    },
)


@st.composite
def encoded(draw: st.DrawFn, objects: st.SearchStrategy[Any]) -> bytes:
    """An object as different writers would write it (compact or spaced, escaped or UTF-8)."""
    obj = draw(objects)
    compact = draw(st.booleans())
    text = json.dumps(
        obj,
        ensure_ascii=draw(st.booleans()),
        separators=(",", ":") if compact else (", ", ": "),
    )
    return (
        draw(st.sampled_from(["", " ", "\n\t"])) + text + draw(st.sampled_from(["", " \r\n"]))
    ).encode()


def with_field(name: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """A valid point with one field set to a drawn value."""
    return encoded(
        st.builds(lambda obj, value: {**obj, name: value}, point_objects, values),
    )


def with_text(name: str, literal: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """A valid point with one field written as raw JSON text (NaN, 1e999, huge numbers...)."""

    def build(obj: dict[str, Any], text: str) -> bytes:
        body = json.dumps({k: v for k, v in obj.items() if k != name})
        return (body[:-1] + f', "{name}": {text}}}').encode()

    return st.builds(build, point_objects, literal)


def in_x(literal: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """A valid point with a raw JSON literal among its features."""
    return st.builds(
        lambda obj, text, at: (
            f'{{"id": {json.dumps(obj["id"])}, "x": ['
            + ", ".join([*map(json.dumps, obj["x"][:at]), text, *map(json.dumps, obj["x"][at:])])
            + "]}"
        ).encode(),
        point_objects,
        literal,
        st.integers(min_value=0, max_value=8),
    )


def _edit(value: bytes, edits: list[tuple[int, int, bool]]) -> bytes:
    out = bytearray(value)
    for where, byte, insert in edits:
        at = where % (len(out) + 1)
        if insert or at == len(out):
            out.insert(at, byte)
        else:
            out[at] = byte
    return bytes(out)


LONG_DIGITS = "7" * (sys.get_int_max_str_digits() + 1)
non_finite = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e400"])
huge = st.sampled_from(["1" + "0" * 400, LONG_DIGITS, "-" + LONG_DIGITS, str(2**64), "1" * 30])

valid_values = encoded(point_objects)
bad_values = st.one_of(
    # not JSON, not an object, several values in one, truncated
    st.binary(max_size=40),
    st.text(max_size=20).map(str.encode),
    encoded(junk.filter(lambda v: not isinstance(v, dict))),
    st.builds(
        lambda a, sep, b: a + sep + b,
        valid_values,
        st.sampled_from([b"", b" ", b","]),
        valid_values,
    ),
    st.builds(lambda v, cut: v[: max(0, len(v) - cut)], valid_values, st.integers(1, 30)),
    # missing fields, wrong types, empty or too many features, id too long
    encoded(point_objects.map(lambda o: {k: v for k, v in o.items() if k != "id"})),
    encoded(point_objects.map(lambda o: {k: v for k, v in o.items() if k != "x"})),
    with_field("id", st.sampled_from([17, True, None, ["p-1"], "", "a" * (MAX_ID_CHARS + 1)])),
    with_field("id", st.just("😀" * (MAX_ID_CHARS + 1))),
    with_field("x", st.sampled_from(["0.25,-1.5", 0.25, {"a": 1}, None, [], [[1.0]], [None]])),
    with_field("x", st.lists(st.booleans() | st.text(max_size=3), min_size=1, max_size=3)),
    with_field("y", st.sampled_from(["3.71", True, False, [3.71], {"v": 1}])),
    with_field("ts", st.sampled_from([-1, -(2**70), 1.0, 1.7e12, "1700000000000", True])),
    with_field("ts", st.integers(max_value=-1)),
    # numbers out of the contract: NaN and infinities, overflow, huge integers, magnitudes
    in_x(non_finite),
    in_x(huge),
    in_x(beyond.map(json.dumps)),
    with_field("y", beyond),
    with_text("y", non_finite | huge),
    with_text("ts", huge),
    with_text("extra", non_finite | huge | st.sampled_from(["[" * 50 + "]" * 50])),
    # bytes only the contract's own decoding judges right
    with_text("extra", st.sampled_from(['"\\ud800"', '"\\udc00x"', '"\\uZZZZ"', '"\\a"'])),
    with_text("id", st.sampled_from(['"\\ud800"', '"a\\ud83d\\ude00"', '"\\u0000"'])),
    st.builds(lambda v: b"\xef\xbb\xbf" + v, valid_values),
    st.builds(
        lambda v, bad: v[:-1] + b', "extra": "' + bad + b'"}',
        valid_values,
        st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf"]),
    ),
    st.builds(lambda v: v[:-1] + b', "id": "again", "x": [9]}', valid_values),
    st.builds(lambda v: v[:-1] + b', "x": "not features"}', valid_values),
    st.builds(lambda v: b'{"x": "not yet", ' + v.lstrip()[1:], valid_values),
    # everything else: a valid value with a few random edits
    st.builds(
        _edit,
        valid_values,
        st.lists(
            st.tuples(
                st.integers(0, 200), st.sampled_from(list(b'{}[]",:0-.eE \\ux9')), st.booleans()
            ),
            min_size=1,
            max_size=3,
        ),
    ),
)
# fixed values that are costly to draw
LARGE_VALUES: list[bytes | None] = [
    None,
    json.dumps({"id": "big", "x": [1.0], "pad": "a" * MAX_MESSAGE_BYTES}).encode(),
    json.dumps({"id": "wide", "x": [0.5] * (MAX_FEATURES + 1)}).encode(),
    json.dumps({"id": "widest-valid", "x": [0.5] * MAX_FEATURES}).encode(),
    b'{"id": "deep", "x": [1], "extra": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"id": "deep-ok", "x": [1], "extra": ' + b"[" * 200 + b"]" * 200 + b"}",
    b'{"id": "deeper", "x": [1], "extra": ' + b"[" * 600 + b"]" * 600 + b"}",
    b'{"id": "digits", "x": [1], "extra": ' + LONG_DIGITS.encode() + b"}",
    b'{"id": "digits-ok", "x": [1], "extra": ' + LONG_DIGITS[:-1].encode() + b"}",
    b'{"id": "pad-ok", "x": [2.5], "pad": "' + b"\xc3\xa9" * 3000 + b'"}',
    b'{"id": "pad-bad", "x": [2.5], "pad": "' + b"\xc3\xa9" * 3000 + b'\xff"}',
]
any_values = st.one_of(valid_values, valid_values, bad_values, st.sampled_from(LARGE_VALUES))


# --- the contract's rules, held by the codec -------------------------------------------------

predictions = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e3, max_value=1e3),
    st.sampled_from([0.0, -0.0, 1e-4, 9.999e-5, 1e16, 9.999999999999998e15, 1e-300, 2e138]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(any_values, min_size=1, max_size=12),
    data=st.data(),
    model=st.text(min_size=1, max_size=20) | st.sampled_from(["polynomial", "m\x7f"]),
    version=st.integers(min_value=1, max_value=2**53 - 1),
)
@example(
    values=[
        b'{"id":"smug-1","y":1.0',
        b'"x":[0.1,0.2,0.3]}',
        b'{"id":"a","x":[1]}{"id":"b","x":[2]}',
    ],
    data=None,
    model="polynomial",
    version=1,
).via("the joined-decode smuggling")
def test_the_codec_accepts_decodes_rejects_and_encodes_as_the_contract_classes(
    values: list[bytes | None], data: Any, model: str, version: int
) -> None:
    expected = [reference(v) for v in values]
    assert codec_outcomes(values) == expected

    labelled = decode_labelled(values)
    want = [(k, o[1]) for k, o in enumerate(expected) if o[0] == "ok" and o[1][2][1] != "None"]
    assert labelled.index == [k for k, _ in want]
    assert [[(type(v), repr(v)) for v in row] for row in labelled.x] == [f[1] for _, f in want]
    assert [repr(y) for y in labelled.y] == [f[2][1] for _, f in want]
    assert labelled.unlabelled == sum(1 for o in expected if o[0] == "ok") - len(want)
    assert labelled.invalid == [(k, o[1]) for k, o in enumerate(expected) if o[0] == "error"]

    points = decode_points(values)
    if data is None or not len(points):
        return
    values_out = data.draw(st.lists(predictions, min_size=len(points), max_size=len(points)))
    stamps = [
        t if t is not None else data.draw(st.integers(min_value=0, max_value=2**63))
        for t in points.ts
    ]
    got = encode_predictions(points.ids, values_out, points.y, stamps, model=model, version=version)
    assert got == [
        Prediction(i, p, model, version, y, t).to_bytes()
        for i, p, y, t in zip(points.ids, values_out, points.y, stamps, strict=True)
    ]


@pytest.mark.parametrize(
    "values",
    [
        [b'{"id":"smug-1","y":1.0', b'"x":[0.1,0.2,0.3]}'],
        [b'{"id":"smug-2","y":1.0,', b'"x":[0.1,0.2,0.3]}'],
        [b'{"id":"a","x":[1]}{"id":"b","x":[2]}'],
        [b'{"id":"a","x":[1]},{"id":"b","x":[2]}'],
        [b'{"id":"a","x":[1]}, {"id":"b",', b'"x":[2]}', b'{"id":"c","x":[3]}{"id":"d","x":[4]}'],
        [b'{"id":"a","x":[1]}]', b'[{"id":"b","x":[2]}'],
        [b'{"id":"a","x":[1], "y": ', b"1.0}"],
    ],
)
def test_records_bad_on_their_own_are_rejected_whatever_surrounds_them(
    values: list[bytes],
) -> None:
    valid = Point("ok", [1.0, 2.0, 3.0], 4.0).to_bytes()
    batch = [valid, *values, valid]
    columns = decode_points(batch)
    assert columns.index == [0, len(batch) - 1]
    assert [k for k, _ in columns.invalid] == list(range(1, len(batch) - 1))
    for k, reason in columns.invalid:
        assert reason == reference(batch[k])[1]


@settings(max_examples=100, deadline=None)
@given(values=st.lists(any_values, min_size=2, max_size=8), at=st.integers(min_value=0))
def test_no_value_of_a_batch_changes_how_another_is_decoded(
    values: list[bytes | None], at: int
) -> None:
    alone = [codec_outcomes([v])[0] for v in values]
    assert codec_outcomes(values) == alone
    k = at % len(values)  # and moving one value elsewhere changes nothing either
    moved = [*values[:k], *values[k + 1 :], values[k]]
    assert codec_outcomes(moved) == [*alone[:k], *alone[k + 1 :], alone[k]]


def test_nesting_is_judged_by_the_contracts_fixed_limit() -> None:
    # msgspec would take values nested up to about the recursion limit
    values: list[bytes | None] = [
        b'{"id": "deep", "x": [1], "extra": ' + b"[" * depth + b"]" * depth + b"}"
        for depth in [*range(MAX_NESTING - 3, MAX_NESTING + 3), 900, 3000]
    ]
    outcomes = codec_outcomes(values)
    assert outcomes == [reference(v) for v in values]
    assert [o[0] for o in outcomes] == ["ok"] * 3 + ["error"] * 5
    assert outcomes[-1][1] == f"not JSON: nested too deeply (the limit is {MAX_NESTING})"


def test_a_feature_beyond_the_input_limit_is_named_with_the_limit() -> None:
    columns = decode_points([b'{"id": "a", "x": [1e40, 2]}', b'{"id": "b", "x": [1], "y": -2e12}'])
    assert columns.invalid == [
        (0, "field 'x': expected numbers within ±1e12, got 1e+40 at index 0"),
        (1, "field 'y': expected a number within ±1e12, got -2000000000000.0"),
    ]


def test_the_typical_batch_decodes_to_columns() -> None:
    values = [
        b'{"id": "p-000017", "x": [0.25, -1.5, 0.7], "y": 3.71}',
        b'{"id": "p-000018", "x": [1, 2, 3], "ts": 1700000000000}',
    ]
    columns = decode_points(values)
    assert columns.index == [0, 1] and columns.invalid == []
    assert columns.ids == ["p-000017", "p-000018"]
    assert columns.x == [[0.25, -1.5, 0.7], [1.0, 2.0, 3.0]]
    assert all(type(v) is float for row in columns.x for v in row)
    assert columns.y == [3.71, None]
    assert columns.ts == [None, 1_700_000_000_000]
    labelled = columns.labelled()
    assert (labelled.index, labelled.x, labelled.y, labelled.unlabelled) == (
        [0],
        [[0.25, -1.5, 0.7]],
        [3.71],
        1,
    )


def test_an_empty_batch_decodes_to_nothing() -> None:
    columns = decode_points([])
    assert len(columns) == 0 and columns.invalid == []
    assert encode_predictions([], [], [], [], model="m", version=1) == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_prediction_raises_as_prediction_to_bytes_does(bad: float) -> None:
    with pytest.raises(ValueError) as expected:
        Prediction("a", bad, "m", 1, None, 0).to_bytes()
    for values in ([bad, 1.0], [1.0, bad], [bad] * 20):
        with pytest.raises(ValueError) as got:
            encode_predictions(
                ["a"] * len(values),
                values,
                [None] * len(values),
                [0] * len(values),
                model="m",
                version=1,
            )
        assert str(got.value) == str(expected.value)


def test_recalibrated_predictions_are_written_as_prediction_to_bytes_writes_them() -> None:
    calibrations = [None, (-1.25, 1.5), (0.0, -2.0)]
    got = encode_predictions(
        ["a", "b", "c"],
        [1.0, 2.5, -3.0],
        [None, 2.0, -3.5],
        [1, 2, 3],
        model="m",
        version=7,
        calibrations=calibrations,
    )
    assert got == [
        Prediction(i, p, "m", 7, y, t, c).to_bytes()
        for i, p, y, t, c in zip(
            "abc", [1.0, 2.5, -3.0], [None, 2.0, -3.5], [1, 2, 3], calibrations, strict=True
        )
    ]
    assert b'"calibration"' not in got[0]
    assert Prediction.from_bytes(got[1]).calibration == (-1.25, 1.5)
