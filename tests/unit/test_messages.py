"""The message contract: every message type parses, validates and encodes as promised."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.messages import (
    MAX_ABS_INPUT,
    MAX_ABS_PARAM,
    MAX_FEATURES,
    MAX_ID_CHARS,
    MAX_INSTANCES,
    MAX_MESSAGE_BYTES,
    MAX_NESTING,
    MAX_VERSION,
    InferReply,
    InferRequest,
    ModelVersion,
    Point,
    Prediction,
    Score,
)
from core.errors import MessageError

MESSAGE_TYPES: list[Any] = [Point, Prediction, ModelVersion, Score, InferRequest, InferReply]

# One valid value of each type, as the contract writes them.
CONTRACT_POINT = b'{"id": "p-000017", "x": [0.25, -1.5], "y": 3.71}'
VALID: dict[type, dict[str, Any]] = {
    Point: {"id": "p-000017", "x": [0.25, -1.5], "y": 3.71, "ts": 1_700_000_000_123},
    Prediction: {
        "id": "p-000017",
        "prediction": 3.5,
        "model": "polynomial",
        "version": 4,
        "y": 3.71,
        "ts": 1_700_000_000_123,
    },
    ModelVersion: {
        "name": "polynomial",
        "version": 4,
        "kind": "polynomial",
        "n_features": 2,
        "params": {"degree": 2, "coef": [0.5, -1.25, 3.0], "intercept": 0.125},
        "trained_on": {"count": 1000, "first_offset": 0},
        "train_score": {"r2": 0.98, "rmse": 0.12, "mae": 0.09},
        "created_at": 1_700_000_000_000,
    },
    Score: {
        "model": "polynomial",
        "version": 4,
        "window": 1000,
        "count": 640,
        "r2": 0.97,
        "rmse": 0.15,
        "mae": 0.11,
        "ts": 1_700_000_000_456,
    },
    InferRequest: {
        "id": "req-1",
        "instances": [[0.25, -1.5], [1.0, 2.0]],
        "model": "polynomial",
        "version": 4,
    },
    InferReply: {"id": "req-1", "model": "polynomial", "version": 4, "predictions": [3.5, -0.25]},
}
REQUIRED: dict[type, list[str]] = {
    Point: ["id", "x"],
    Prediction: ["id", "prediction", "model", "version", "ts"],
    ModelVersion: [
        "name",
        "version",
        "kind",
        "n_features",
        "params",
        "trained_on",
        "train_score",
        "created_at",
    ],
    Score: ["model", "version", "window", "count", "ts"],
    InferRequest: ["id", "instances"],
    InferReply: ["id", "model", "version", "predictions"],
}


def encode(obj: Any) -> bytes:
    """A value as a producer would write it (NaN and infinities allowed, to test them)."""
    return json.dumps(obj).encode()


def point(**fields: Any) -> bytes:
    """The contract's example point with some fields replaced (``None`` drops a field)."""
    obj: dict[str, Any] = {"id": "p-000017", "x": [0.25, -1.5], "y": 3.71}
    for name, value in fields.items():
        if value is None:
            obj.pop(name, None)
        else:
            obj[name] = value
    return encode(obj)


def rejected(cls: Any, raw: bytes | None) -> MessageError:
    """The MessageError ``cls.from_bytes(raw)`` raises (the test fails if it does not)."""
    with pytest.raises(MessageError) as info:
        cls.from_bytes(raw)
    return info.value


# --- valid messages ---------------------------------------------------------------


def test_the_contract_example_point_parses_to_its_fields() -> None:
    p = Point.from_bytes(CONTRACT_POINT)
    assert p == Point(id="p-000017", x=[0.25, -1.5], y=3.71, ts=None)
    assert json.loads(p.to_bytes()) == {"id": "p-000017", "x": [0.25, -1.5], "y": 3.71}


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda c: c.__name__)
def test_valid_message_round_trips_bytes_object_bytes_object(cls: Any) -> None:
    raw = encode(VALID[cls])
    first = cls.from_bytes(raw)
    encoded = first.to_bytes()
    second = cls.from_bytes(encoded)
    assert second == first
    assert second.to_bytes() == encoded  # encoding is stable
    assert json.loads(encoded) == VALID[cls]  # and nothing is lost or added


@pytest.mark.parametrize(
    ("cls", "obj", "expected"),
    [
        (Point, {"id": "a", "x": [1]}, Point(id="a", x=[1.0])),
        (Point, {"id": "a", "x": [1, 2.5], "y": None}, Point(id="a", x=[1.0, 2.5])),
        (Point, {"id": "a", "x": [-3], "y": 0, "ts": 0}, Point(id="a", x=[-3.0], y=0.0, ts=0)),
        (Point, {"id": "é" * MAX_ID_CHARS, "x": [0.0]}, Point(id="é" * MAX_ID_CHARS, x=[0.0])),
        (
            Prediction,
            {"id": "a", "prediction": -1, "model": "m", "version": 1, "y": None, "ts": 5},
            Prediction(id="a", prediction=-1.0, model="m", version=1, y=None, ts=5),
        ),
        (
            Prediction,
            {
                "id": "a",
                "prediction": 2,
                "model": "m",
                "version": 1,
                "ts": 5,
                "calibration": [-1, 1.5],
            },
            Prediction("a", 2.0, "m", 1, None, 5, calibration=(-1.0, 1.5)),
        ),
        (
            Score,
            {"model": "m", "version": 1, "window": 10, "count": 1, "r2": None, "ts": 0},
            Score(model="m", version=1, window=10, count=1, r2=None, rmse=None, mae=None, ts=0),
        ),
        (InferRequest, {"id": "r", "instances": [[1]]}, InferRequest(id="r", instances=[[1.0]])),
        (
            InferReply,
            {"id": "r", "error": "no model yet", "status": 503},
            InferReply(id="r", error="no model yet", status=503),
        ),
        (
            InferReply,
            {"id": "r", "error": "bad rows"},
            InferReply(id="r", error="bad rows", status=400),
        ),
    ],
)
def test_optional_fields_take_their_defaults(cls: Any, obj: dict[str, Any], expected: Any) -> None:
    parsed = cls.from_bytes(encode(obj))
    assert parsed == expected
    assert cls.from_bytes(parsed.to_bytes()) == expected


def test_point_leaves_unset_optional_fields_out_of_its_encoding() -> None:
    assert json.loads(Point(id="a", x=[1.0]).to_bytes()) == {"id": "a", "x": [1.0]}


def test_error_reply_encodes_only_id_error_and_status() -> None:
    reply = InferReply(id="r", error="no model yet", status=503)
    assert json.loads(reply.to_bytes()) == {"id": "r", "error": "no model yet", "status": 503}


def test_bytearray_and_str_values_parse_like_bytes() -> None:
    expected = Point.from_bytes(CONTRACT_POINT)
    assert Point.from_bytes(bytearray(CONTRACT_POINT)) == expected
    assert Point.from_bytes(CONTRACT_POINT.decode()) == expected


def test_non_ascii_text_survives_the_round_trip() -> None:
    p = Point.from_bytes('{"id": "capteur-été-温度", "x": [1.5]}'.encode())
    assert p.id == "capteur-été-温度"
    assert Point.from_bytes(p.to_bytes()).id == "capteur-été-温度"


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda c: c.__name__)
def test_unknown_fields_are_ignored(cls: Any) -> None:
    extended = {
        **VALID[cls],
        "added_in_v9": {"nested": [1, "two", None]},
        "another": "value",
    }
    assert cls.from_bytes(encode(extended)) == cls.from_bytes(encode(VALID[cls]))
    assert "added_in_v9" not in json.loads(cls.from_bytes(encode(extended)).to_bytes())


def test_unknown_fields_inside_train_score_are_ignored() -> None:
    obj = copy.deepcopy(VALID[ModelVersion])
    obj["train_score"]["mape"] = 0.5
    assert ModelVersion.from_bytes(encode(obj)).train_score == {
        "r2": 0.98,
        "rmse": 0.12,
        "mae": 0.09,
    }


def test_parsing_does_not_depend_on_field_order_or_whitespace() -> None:
    raw = b'\n { "y" : 3.71 ,\t"x":[ 0.25 , -1.5 ] , "id" : "p-000017" } \n'
    assert Point.from_bytes(raw) == Point.from_bytes(CONTRACT_POINT)


# --- bad input, for every message type ----------------------------------------------


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"hello", "not JSON: Expecting value at line 1 column 1"),
        (b"", "not JSON: Expecting value"),
        (b'{"id": "a", "x": [1]', "not JSON: Expecting ',' delimiter"),
        (b"{'id': 'a'}", "not JSON: Expecting property name enclosed in double quotes"),
        (b'{"id": "\xff\xfe", "x": [1]}', "not UTF-8 text"),
        (b"\xc3\x28", "not UTF-8 text"),
        (b"[1, 2]", "expected a JSON object, got [1, 2]"),
        (b'"p-000017"', 'expected a JSON object, got "p-000017"'),
        (b"42", "expected a JSON object, got 42"),
        (b"-1.5", "expected a JSON object, got -1.5"),
        (b"null", "expected a JSON object, got null"),
        (b"true", "expected a JSON object, got true"),
        (None, "expected a JSON object, got an empty value (tombstone)"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON: nested too deeply"),
        (b'{"id": ' + b"1" * 5000 + b"}", "not JSON: a number has too many digits"),
    ],
    ids=[
        "text",
        "empty",
        "truncated",
        "single-quotes",
        "latin1-bytes",
        "bad-utf8-sequence",
        "array",
        "string",
        "integer",
        "float",
        "null",
        "boolean",
        "tombstone",
        "deep-nesting",
        "5000-digit-number",
    ],
)
def test_what_is_not_a_json_object_is_rejected(cls: Any, raw: bytes | None, expected: str) -> None:
    error = rejected(cls, raw)
    assert expected in str(error)
    assert error.field is None


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_json_in_another_encoding_than_utf8_is_rejected(cls: Any, encoding: str) -> None:
    raw = json.dumps(VALID[cls]).encode(encoding)
    error = rejected(cls, raw)
    assert "not UTF-8 text" in str(error) or "not JSON" in str(error)


def test_a_utf8_byte_order_mark_is_tolerated() -> None:
    assert Point.from_bytes(b"\xef\xbb\xbf" + CONTRACT_POINT) == Point.from_bytes(CONTRACT_POINT)


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda c: c.__name__)
def test_a_message_over_the_size_limit_is_rejected_before_parsing(cls: Any) -> None:
    padded = {**VALID[cls], "padding": "a" * MAX_MESSAGE_BYTES}
    raw = encode(padded)
    error = rejected(cls, raw)
    assert str(error) == f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}"


def test_a_message_just_under_the_size_limit_is_accepted() -> None:
    base = encode({"id": "a", "x": [1.0], "padding": ""})
    raw = encode({"id": "a", "x": [1.0], "padding": "a" * (MAX_MESSAGE_BYTES - len(base))})
    assert len(raw) == MAX_MESSAGE_BYTES
    assert Point.from_bytes(raw).id == "a"


@pytest.mark.parametrize(
    "cls_field",
    [(cls, name) for cls, names in REQUIRED.items() for name in names],
    ids=lambda cf: f"{cf[0].__name__}.{cf[1]}",
)
def test_a_missing_required_field_is_named(cls_field: tuple[Any, str]) -> None:
    cls, name = cls_field
    obj = dict(VALID[cls])
    del obj[name]
    error = rejected(cls, encode(obj))
    assert error.field == name
    assert str(error) == f"field {name!r}: required field is missing"


def test_an_error_reply_needs_its_id() -> None:
    error = rejected(InferReply, encode({"error": "no model yet", "status": 503}))
    assert str(error) == "field 'id': required field is missing"


# --- bad fields of a point ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "expected"),
    [
        # id
        (point(id=""), "id", "expected 1 to 128 characters, got 0"),
        (point(id="a" * (MAX_ID_CHARS + 1)), "id", "expected 1 to 128 characters, got 129"),
        (point(id=17), "id", "expected a string, got 17"),
        (point(id=True), "id", "expected a string, got true"),
        (point(id=["p-1"]), "id", 'expected a string, got ["p-1"]'),
        (b'{"id": null, "x": [1]}', "id", "expected a string, got null"),
        # x: not a list, empty, too long
        (point(x="0.25,-1.5"), "x", 'expected an array of finite numbers, got "0.25,-1.5"'),
        (point(x=0.25), "x", "expected an array of finite numbers, got 0.25"),
        (point(x={"a": 1}), "x", 'expected an array of finite numbers, got {"a": 1}'),
        (b'{"id": "a", "x": null}', "x", "expected an array of finite numbers, got null"),
        (point(x=[]), "x", "expected at least one feature, got an empty array"),
        (
            point(x=[0.0] * (MAX_FEATURES + 1)),
            "x",
            f"expected at most {MAX_FEATURES} features, got {MAX_FEATURES + 1}",
        ),
        # x: values that are not numbers (bool is an int in Python, not in the contract)
        (point(x=[0.25, "1.5"]), "x[1]", 'expected a number, got "1.5"'),
        (point(x=[True, 1.0]), "x[0]", "expected a number, got true"),
        (point(x=[1.0, False]), "x[1]", "expected a number, got false"),
        (point(x=[1.0, None]), "x[1]", "expected a number, got null"),
        (point(x=[[1.0]]), "x[0]", "expected a number, got [1.0]"),
        (point(x=[{"v": 1}]), "x[0]", 'expected a number, got {"v": 1}'),
        # x: numbers that are not finite
        (b'{"id": "a", "x": [1, NaN]}', "x[1]", "expected a finite number, got NaN"),
        (b'{"id": "a", "x": [Infinity]}', "x[0]", "expected a finite number, got Infinity"),
        (b'{"id": "a", "x": [-Infinity]}', "x[0]", "expected a finite number, got -Infinity"),
        (b'{"id": "a", "x": [1e400]}', "x[0]", "expected a finite number, got Infinity"),
        (b'{"id": "a", "x": [2, -1e400]}', "x[1]", "expected a finite number, got -Infinity"),
        (
            b'{"id": "a", "x": [' + b"9" * 400 + b"]}",
            "x[0]",
            "expected a finite number, got 9999999999",
        ),
        # y
        (point(y="3.71"), "y", 'expected a number, got "3.71"'),
        (point(y=True), "y", "expected a number, got true"),
        (point(y=[3.71]), "y", "expected a number, got [3.71]"),
        (b'{"id": "a", "x": [1], "y": NaN}', "y", "expected a finite number, got NaN"),
        (b'{"id": "a", "x": [1], "y": Infinity}', "y", "expected a finite number, got Infinity"),
        (b'{"id": "a", "x": [1], "y": -1e999}', "y", "expected a finite number, got -Infinity"),
        # ts
        (point(ts="1700000000000"), "ts", 'expected an integer, got "1700000000000"'),
        (point(ts=1.7e12), "ts", "expected an integer, got 1700000000000.0"),
        (point(ts=1.0), "ts", "expected an integer, got 1.0"),
        (point(ts=True), "ts", "expected an integer, got true"),
        (point(ts=-1), "ts", "expected an integer >= 0, got -1"),
    ],
)
def test_a_bad_point_field_is_named_with_what_was_expected(
    raw: bytes, field: str, expected: str
) -> None:
    error = rejected(Point, raw)
    assert error.field == field
    assert str(error).startswith(f"field {field!r}: {expected}")


def test_exactly_max_features_is_accepted() -> None:
    assert len(Point.from_bytes(point(x=[0.5] * MAX_FEATURES)).x) == MAX_FEATURES


def test_a_non_finite_literal_is_rejected_even_in_an_unknown_field() -> None:
    error = rejected(Point, b'{"id": "a", "x": [1], "extra": {"values": [0, NaN]}}')
    assert str(error) == "field 'extra.values[1]': expected a finite number, got NaN"


def test_a_non_finite_literal_deep_inside_a_message_gets_a_short_field_path() -> None:
    raw = b'{"id": "a", "x": [1], "extra": ' + b"[" * 500 + b"NaN" + b"]" * 500 + b"}"
    error = rejected(Point, raw)
    assert error.field is not None
    assert error.field.startswith("extra[0][0]")
    assert len(error.field) <= 80
    assert "expected a finite number, got NaN" in str(error)


# --- input limits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (
            b'{"id": "a", "x": [1e40, 2]}',
            "x",
            "expected numbers within ±1e12, got 1e+40 at index 0",
        ),
        (
            b'{"id": "a", "x": [0.5, -1000000000001]}',
            "x",
            "expected numbers within ±1e12, got -1000000000001 at index 1",
        ),
        (
            b'{"id": "a", "x": [1, 1e308]}',
            "x",
            "expected numbers within ±1e12, got 1e+308 at index 1",
        ),
        (
            b'{"id": "a", "x": [1], "y": 2e12}',
            "y",
            "expected a number within ±1e12, got 2000000000000.0",
        ),
        (
            b'{"id": "a", "x": [1], "y": -10000000000000}',
            "y",
            "expected a number within ±1e12, got -10000000000000",
        ),
    ],
)
def test_a_point_beyond_the_input_limits_is_refused_naming_field_and_limit(
    raw: bytes, field: str, message: str
) -> None:
    error = rejected(Point, raw)
    assert error.field == field
    assert str(error) == f"field {field!r}: {message}"


def test_the_input_limits_themselves_are_accepted() -> None:
    edge = MAX_ABS_INPUT
    assert Point.from_bytes(point(x=[edge, -edge], y=-edge)) == Point(
        "p-000017", [edge, -edge], -edge
    )
    assert Point.from_bytes(point(x=[10**12], y=-(10**12))).x == [1e12]
    beyond = math.nextafter(edge, math.inf)
    assert rejected(Point, point(x=[beyond])).field == "x"
    assert rejected(Point, point(y=-beyond)).field == "y"


def test_inference_rows_beyond_the_input_limit_are_refused() -> None:
    raw = with_fields(InferRequest, instances=[[0.25, -1.5], [1.0, 1e40]])
    error = rejected(InferRequest, raw)
    assert str(error) == "field 'instances[1]': expected numbers within ±1e12, got 1e+40 at index 1"
    ok = with_fields(InferRequest, instances=[[MAX_ABS_INPUT, -MAX_ABS_INPUT]])
    assert InferRequest.from_bytes(ok).instances == [[MAX_ABS_INPUT, -MAX_ABS_INPUT]]


@pytest.mark.parametrize(
    ("params", "field", "shown"),
    [
        (
            {"kind": "multivariate", "intercept": 0.5, "coef": [1.0, 1e308]},
            "params.coef[1]",
            "1e+308",
        ),
        (
            {"kind": "multivariate", "intercept": -2e15, "coef": [1.0]},
            "params.intercept",
            "-2000000000000000.0",
        ),
        ({"nested": {"deeper": [0, [10**16]]}}, "params.nested.deeper[1][0]", "10000000000000000"),
        ({"coef": [2**1024]}, "params.coef[0]", "1797693134862315907729305190789024733..."),
    ],
)
def test_a_model_with_a_coefficient_beyond_the_param_limit_is_refused(
    params: dict[str, Any], field: str, shown: str
) -> None:
    error = rejected(ModelVersion, with_fields(ModelVersion, params=params))
    assert error.field == field
    assert str(error) == f"field {field!r}: expected a number within ±1e15, got {shown}"


def test_coefficients_at_the_param_limit_are_accepted() -> None:
    params = {"kind": "multivariate", "intercept": -MAX_ABS_PARAM, "coef": [MAX_ABS_PARAM, 0]}
    parsed = ModelVersion.from_bytes(with_fields(ModelVersion, params=params))
    assert parsed.params == params


@pytest.mark.parametrize("cls", [Prediction, ModelVersion, Score, InferRequest, InferReply])
def test_versions_stop_at_the_largest_integer_json_holds_exactly(cls: Any) -> None:
    assert MAX_VERSION == 2**53 - 1
    assert cls.from_bytes(with_fields(cls, version=MAX_VERSION)).version == MAX_VERSION
    error = rejected(cls, with_fields(cls, version=MAX_VERSION + 1))
    assert str(error) == f"field 'version': expected an integer <= {MAX_VERSION}, got {2**53}"


def test_nesting_has_a_fixed_limit_whatever_the_stack_depth() -> None:
    def nested(depth: int) -> bytes:  # the object itself is one level
        return b'{"id": "a", "x": [1], "e": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"

    def at_stack_depth(frames: int, raw: bytes) -> Point:
        return Point.from_bytes(raw) if frames == 0 else at_stack_depth(frames - 1, raw)

    for frames in (0, 300):
        assert at_stack_depth(frames, nested(MAX_NESTING)).id == "a"
        with pytest.raises(MessageError) as info:
            at_stack_depth(frames, nested(MAX_NESTING + 1))
        assert str(info.value) == f"not JSON: nested too deeply (the limit is {MAX_NESTING})"
    # brackets inside strings are text, not nesting
    assert Point.from_bytes(point(note='\\"[' * 600)).id == "p-000017"


# --- bad fields of the other messages -----------------------------------------------


def with_fields(cls: type, **fields: Any) -> bytes:
    """A valid value of ``cls`` with some fields replaced."""
    return encode({**VALID[cls], **fields})


@pytest.mark.parametrize(
    ("cls", "raw", "field", "expected"),
    [
        (Prediction, with_fields(Prediction, prediction="3.5"), "prediction", "expected a number"),
        (
            Prediction,
            b'{"id": "a", "prediction": NaN, "model": "m", "version": 1, "ts": 1}',
            "prediction",
            "expected a finite number, got NaN",
        ),
        (Prediction, with_fields(Prediction, version=0), "version", "expected an integer >= 1"),
        (Prediction, with_fields(Prediction, version=True), "version", "expected an integer"),
        (Prediction, with_fields(Prediction, model=""), "model", "expected 1 to 128 characters"),
        (Prediction, with_fields(Prediction, ts=-5), "ts", "expected an integer >= 0, got -5"),
        (Prediction, with_fields(Prediction, y="x"), "y", 'expected a number, got "x"'),
        (
            Prediction,
            with_fields(Prediction, calibration=[1.0]),
            "calibration",
            "expected [a, b] (two numbers), got [1.0]",
        ),
        (
            Prediction,
            with_fields(Prediction, calibration=[1.0, "2"]),
            "calibration[1]",
            'expected a number, got "2"',
        ),
        (
            ModelVersion,
            with_fields(ModelVersion, kind="linear"),
            "kind",
            'expected one of multivariate, polynomial, got "linear"',
        ),
        (
            ModelVersion,
            with_fields(ModelVersion, n_features=0),
            "n_features",
            "expected an integer >= 1, got 0",
        ),
        (
            ModelVersion,
            with_fields(ModelVersion, n_features=MAX_FEATURES + 1),
            "n_features",
            f"expected at most {MAX_FEATURES}",
        ),
        (
            ModelVersion,
            with_fields(ModelVersion, params=[1.0, 2.0]),
            "params",
            "expected an object, got [1.0, 2.0]",
        ),
        (
            ModelVersion,
            with_fields(ModelVersion, params={"coef": [1.0, float("nan")]}),
            "params.coef[1]",
            "expected a finite number, got NaN",
        ),
        (
            ModelVersion,
            with_fields(ModelVersion, trained_on={"rows": 5}),
            "trained_on.count",
            "required field is missing",
        ),
        (
            ModelVersion,
            with_fields(ModelVersion, trained_on={"count": -1}),
            "trained_on.count",
            "expected an integer >= 0",
        ),
        (
            ModelVersion,
            with_fields(ModelVersion, train_score={"r2": "high"}),
            "train_score.r2",
            'expected a number, got "high"',
        ),
        (
            ModelVersion,
            with_fields(ModelVersion, version=1.5),
            "version",
            "expected an integer, got 1.5",
        ),
        (Score, with_fields(Score, window=0), "window", "expected an integer >= 1, got 0"),
        (Score, with_fields(Score, count=-1), "count", "expected an integer >= 0, got -1"),
        (Score, with_fields(Score, rmse=False), "rmse", "expected a number, got false"),
        (
            Score,
            with_fields(Score, mae=float("inf")),
            "mae",
            "expected a finite number, got Infinity",
        ),
        (
            InferRequest,
            with_fields(InferRequest, instances=[]),
            "instances",
            "expected a non-empty array of rows, got []",
        ),
        (
            InferRequest,
            with_fields(InferRequest, instances=[1.0, 2.0]),
            "instances[0]",
            "expected an array of finite numbers, got 1.0",
        ),
        (
            InferRequest,
            with_fields(InferRequest, instances=[[1.0, 2.0], [1.0, 2.0, 3.0]]),
            "instances[1]",
            "every row needs 2 features like the first, got 3",
        ),
        (
            InferRequest,
            with_fields(InferRequest, instances=[[1.0, "2"]]),
            "instances[0][1]",
            'expected a number, got "2"',
        ),
        (
            InferRequest,
            with_fields(InferRequest, instances=[[0.0]] * (MAX_INSTANCES + 1)),
            "instances",
            f"expected at most {MAX_INSTANCES} rows, got {MAX_INSTANCES + 1}",
        ),
        (InferRequest, with_fields(InferRequest, version=0), "version", "expected an integer >= 1"),
        (InferRequest, with_fields(InferRequest, model=""), "model", "expected 1 to 128"),
        (
            InferReply,
            with_fields(InferReply, predictions="3.5"),
            "predictions",
            'expected an array, got "3.5"',
        ),
        (
            InferReply,
            with_fields(InferReply, predictions=[1.0, None]),
            "predictions[1]",
            "expected a number, got null",
        ),
        (
            InferReply,
            encode({"id": "r", "error": "late", "status": 200}),
            "status",
            "expected an integer >= 400, got 200",
        ),
    ],
)
def test_a_bad_field_of_another_message_is_named(
    cls: Any, raw: bytes, field: str, expected: str
) -> None:
    error = rejected(cls, raw)
    assert error.field == field
    assert str(error).startswith(f"field {field!r}: {expected}")


# --- properties ----------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
inputs = st.floats(min_value=-MAX_ABS_INPUT, max_value=MAX_ABS_INPUT)


@given(
    id=st.text(min_size=1, max_size=MAX_ID_CHARS),
    x=st.lists(inputs, min_size=1, max_size=50),
    y=st.none() | inputs,
    ts=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
)
def test_any_valid_point_round_trips_exactly(
    id: str, x: list[float], y: float | None, ts: int | None
) -> None:
    original = Point(id=id, x=x, y=y, ts=ts)
    raw = original.to_bytes()
    parsed = Point.from_bytes(raw)
    assert parsed == original
    # exactly: same bits (== would let -0.0 pass for 0.0) and same bytes again
    assert [math.copysign(1.0, v) for v in parsed.x] == [math.copysign(1.0, v) for v in x]
    assert parsed.to_bytes() == raw


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**1024, -(10**400), 2**63, -(2**63) - 1])  # beyond float / int64
    | st.floats()
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=5,
)


KNOWN_FIELDS = [(cls, name) for cls in MESSAGE_TYPES for name in VALID[cls]] + [
    (InferReply, "error"),
    (InferReply, "status"),
    (Point, "unknown"),
]


@pytest.mark.parametrize("cls_field", KNOWN_FIELDS, ids=lambda cf: f"{cf[0].__name__}.{cf[1]}")
@settings(max_examples=30, deadline=None)
@given(value=json_values)
def test_any_value_in_any_field_either_parses_or_raises_message_error(
    cls_field: tuple[Any, str], value: Any
) -> None:
    cls, name = cls_field
    raw = json.dumps({**VALID[cls], name: value}).encode()
    try:
        parsed = cls.from_bytes(raw)
    except MessageError as error:
        assert str(error)
    else:
        assert cls.from_bytes(parsed.to_bytes()) == parsed


@settings(max_examples=300)
@given(cls=st.sampled_from(MESSAGE_TYPES), raw=st.binary(max_size=200))
def test_any_bytes_either_parse_or_raise_message_error(cls: Any, raw: bytes) -> None:
    try:
        cls.from_bytes(raw)
    except MessageError as error:
        assert str(error)
