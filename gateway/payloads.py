"""HTTP bodies: reading requests into rows of features, and writing the answers.

Every problem is a `GatewayError` whose text says what is wrong and what to send
instead; nothing here talks to Kafka or knows the models.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from bus.messages import (
    MAX_ABS_INPUT,
    MAX_FEATURES,
    MAX_ID_CHARS,
    MAX_INSTANCES,
    MAX_NAME_CHARS,
    MAX_VERSION,
    InferReply,
)
from core.errors import StreamscoreError

Json = dict[str, Any]

#: Open Inference Protocol tensor datatypes the models accept (all become FP64).
NUMERIC_DATATYPES = frozenset(
    {"FP64", "FP32", "FP16", "BF16"}
    | {f"{sign}INT{bits}" for sign in ("", "U") for bits in (8, 16, 32, 64)}
)
OUTPUT_NAME = "predict"
#: The contract's bound on a feature, as people write it (1e12).
INPUT_LIMIT = f"{MAX_ABS_INPUT:.0e}".replace("e+", "e")


class GatewayError(StreamscoreError):
    """A request the gateway answers with an error status and ``{"error": message}``."""

    def __init__(self, status: int, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


def bad(message: str) -> GatewayError:
    """A 400 error."""
    return GatewayError(400, message)


def bad_field(path: str, reason: str) -> GatewayError:
    """A 400 error about one field of the body, named like ``field 'x[0]': <reason>``."""
    return bad(f"field {path!r}: {reason}")


def too_large(limit: int) -> GatewayError:
    """The 413 error of a body over ``limit`` bytes."""
    return GatewayError(413, f"the body is larger than {limit} bytes: send fewer rows per request")


class LongInteger:
    """An integer literal with more digits than Python converts (``sys.get_int_max_str_digits``).

    Only ever made by `decode_json` for a body that holds one, so that the field can
    be named in the 400 instead of failing the whole decode.
    """

    __slots__ = ("digits",)

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))

    def __repr__(self) -> str:
        return f"<an integer of {self.digits} digits>"


def _integer_or_long(text: str) -> int | LongInteger:
    try:
        return int(text)
    except ValueError:
        return LongInteger(text)


def _reject_constant(name: str) -> float:
    raise bad(f"the body is not valid JSON: {name} is not a number; send finite numbers")


def _loads(raw: bytes, *, keep_long_integers: bool = False) -> Any:
    try:
        if keep_long_integers:
            return json.loads(raw, parse_constant=_reject_constant, parse_int=_integer_or_long)
        return json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise bad("the body is not UTF-8 text: send UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise bad(
            f"the body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise bad("the body is nested too deeply") from None


def decode_json(raw: bytes) -> Json:
    """Decode a request body that must be a JSON object."""
    if not raw.strip():
        raise bad("the body is empty: send a JSON object (see GET /openapi.json)")
    try:
        obj = _loads(raw)
    except ValueError:
        # An integer past Python's int/str conversion limit (4300 digits by default).
        # Decode again keeping such integers as markers: the field that holds one is
        # named in the 400, and a field nobody reads is ignored like any other.
        obj = _loads(raw, keep_long_integers=True)
    if not isinstance(obj, dict):
        raise bad(f"expected a JSON object as the body, got a JSON {type(obj).__name__}")
    return obj


def _describe_long(value: Any) -> str:
    if isinstance(value, LongInteger):
        return repr(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _describe(value: Any) -> str:
    if isinstance(value, LongInteger):
        return f"an integer of {value.digits} digits"
    try:
        text = json.dumps(value, default=_describe_long)
    except (TypeError, ValueError, RecursionError):
        return f"a JSON {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: Any, path: str, integer: bool = False) -> float:
    if isinstance(value, LongInteger):
        raise bad_field(
            path,
            f"an integer of {value.digits} digits is too large: send numbers within ±{INPUT_LIMIT}",
        )
    if type(value) is not int and (integer or type(value) is not float):
        expected = "an integer" if integer else "a number"
        raise bad_field(path, f"expected {expected}, got {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not abs(number) <= MAX_ABS_INPUT:
        raise bad_field(
            path, f"{_describe(value)} is too large: send numbers within ±{INPUT_LIMIT}"
        )
    return number


def _row(value: Any, path: str) -> list[float]:
    if not isinstance(value, list):
        raise bad_field(path, f"expected an array of numbers, got {_describe(value)}")
    if not value:
        raise bad_field(path, "expected at least one feature, got an empty array")
    if len(value) > MAX_FEATURES:
        raise bad_field(path, f"at most {MAX_FEATURES} features, got {len(value)}")
    return [_number(v, f"{path}[{i}]") for i, v in enumerate(value)]


def _optional_text(body: Json, name: str, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise bad_field(
            name, f"expected a string of 1 to {limit} characters, got {_describe(value)}"
        )
    try:
        value.encode()
    except UnicodeEncodeError:
        raise bad_field(
            name, "not valid Unicode (it holds a lone surrogate escape): send UTF-8 text"
        ) from None
    return value


def _rows(rows: Any, path: str) -> list[list[float]]:
    if not isinstance(rows, list) or not rows:
        raise bad_field(path, f"expected a non-empty array of rows, got {_describe(rows)}")
    if len(rows) > MAX_INSTANCES:
        raise bad_field(
            path, f"at most {MAX_INSTANCES} rows per request, got {len(rows)}; split it"
        )
    out = [_row(row, f"{path}[{i}]") for i, row in enumerate(rows)]
    for i, row in enumerate(out):
        if len(row) != len(out[0]):
            raise bad_field(
                f"{path}[{i}]",
                f"every row needs {len(out[0])} features like the first, got {len(row)}",
            )
    return out


# --- Open Inference Protocol ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rows:
    """Rows of features to predict, with the caller's request id and model choice."""

    rows: list[list[float]]
    id: str | None = None
    model: str | None = None
    version: int | None = None
    single: bool = False  # the short form's {"x": [...]}: answer with one prediction
    outputs: tuple[str, ...] | None = None  # the outputs asked for (None: all of them)

    @property
    def width(self) -> int:
        """The number of features per row."""
        return len(self.rows[0])


def parse_infer(body: Json) -> Rows:
    """Read an Open Inference Protocol request: one FP/INT input tensor of shape [rows, features].

    ``data`` is row-major, flat (``[1, 2, 3, 4]``) or nested (``[[1, 2], [3, 4]]``).
    """
    request_id = _optional_text(body, "id", MAX_ID_CHARS)
    tensor = _the_tensor(body.get("inputs"))
    datatype = tensor["datatype"]
    if not isinstance(datatype, str) or datatype not in NUMERIC_DATATYPES:
        raise bad_field(
            "inputs[0].datatype",
            f"expected a numeric type (FP64, FP32, INT64, ...), got {_describe(datatype)}",
        )
    shape = _tensor_shape(tensor["shape"])
    data = tensor["data"]
    if not isinstance(data, list):
        raise bad_field("inputs[0].data", f"expected an array of numbers, got {_describe(data)}")
    rows = _tensor_rows(data, shape, integer=datatype.startswith(("INT", "UINT")))
    return Rows(rows, id=request_id, outputs=parse_outputs(body.get("outputs")))


def _the_tensor(inputs: Any) -> dict[str, Any]:
    """The one input tensor of a request, with its name, shape, datatype and data."""
    if not isinstance(inputs, list) or not inputs:
        raise bad_field(
            "inputs",
            "expected an array with one tensor, e.g. "
            '{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [0.5, 1.5]}]}',
        )
    if len(inputs) != 1:
        raise bad_field("inputs", f"expected one tensor (the feature matrix), got {len(inputs)}")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise bad_field("inputs[0]", f"expected an object, got {_describe(tensor)}")
    for name in ("name", "shape", "datatype", "data"):
        if name not in tensor:
            raise bad_field(
                f"inputs[0].{name}", "missing; a tensor has name, shape, datatype and data"
            )
    if not isinstance(tensor["name"], str):
        raise bad_field("inputs[0].name", f"expected a string, got {_describe(tensor['name'])}")
    return tensor


def _tensor_shape(shape: Any) -> list[int]:
    """A tensor's ``[rows, features]``, within the limits."""
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(type(n) is int and n >= 1 for n in shape)
    ):
        raise bad_field(
            "inputs[0].shape",
            f"expected [rows, features] of positive integers, got {_describe(shape)}",
        )
    n, d = shape
    if n > MAX_INSTANCES:
        raise bad_field(
            "inputs[0].shape",
            f"at most {MAX_INSTANCES} rows per request, got {_describe(n)}; split it",
        )
    if d > MAX_FEATURES:
        raise bad_field("inputs[0].shape", f"at most {MAX_FEATURES} features, got {_describe(d)}")
    return shape


def _tensor_rows(data: list[Any], shape: list[int], *, integer: bool) -> list[list[float]]:
    """A tensor's ``data`` (nested or flat, row-major) as rows of ``shape``."""
    n, d = shape
    if data and isinstance(data[0], list):
        if len(data) != n:
            raise bad_field("inputs[0].data", f"shape {shape} needs {n} rows, got {len(data)}")
        rows = []
        for i, row in enumerate(data):
            path = f"inputs[0].data[{i}]"
            if not isinstance(row, list) or len(row) != d:
                raise bad_field(
                    path, f"shape {shape} needs rows of {d} numbers, got {_describe(row)}"
                )
            rows.append([_number(v, f"{path}[{j}]", integer) for j, v in enumerate(row)])
        return rows
    if len(data) != n * d:
        raise bad_field(
            "inputs[0].data",
            f"shape {shape} needs {n * d} numbers (row-major), got {len(data)}",
        )
    flat = [_number(v, f"inputs[0].data[{i}]", integer) for i, v in enumerate(data)]
    return [flat[i * d : (i + 1) * d] for i in range(n)]


def parse_outputs(value: Any) -> tuple[str, ...] | None:
    """The output names an inference request asks for (None: every output).

    Each is ``{"name": ..., "parameters": {...}}``; a name the models do not have
    is refused (400), so that a client never takes a missing output for an answer.
    """
    if value is None:
        return None
    if not isinstance(value, list):
        raise bad_field("outputs", f"expected an array of {{'name': ...}}, got {_describe(value)}")
    names: list[str] = []
    for i, output in enumerate(value):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise bad_field(f"outputs[{i}]", f"expected {{'name': ...}}, got {_describe(output)}")
        parameters = output.get("parameters", {})
        if not isinstance(parameters, dict) or parameters.get("binary_data") is True:
            raise bad_field(
                f"outputs[{i}].parameters",
                "binary tensor data is not supported: ask for JSON (binary_data false)",
            )
        if output["name"] != OUTPUT_NAME:
            raise bad_field(
                f"outputs[{i}].name",
                f"unknown output {_describe(output['name'])}: the models have one output, "
                f"{OUTPUT_NAME!r}",
            )
        names.append(output["name"])
    return tuple(dict.fromkeys(names))


def infer_response(
    reply: InferReply, request_id: str, outputs: tuple[str, ...] | None = None
) -> Json:
    """The Open Inference Protocol answer to a successful inference (the outputs asked for)."""
    tensors = {
        OUTPUT_NAME: {
            "name": OUTPUT_NAME,
            "shape": [len(reply.predictions)],
            "datatype": "FP64",
            "data": reply.predictions,
        }
    }
    names = tuple(tensors) if outputs is None else outputs
    return {
        "model_name": reply.model,
        "model_version": str(reply.version),
        "id": request_id,
        "outputs": [tensors[name] for name in names],
    }


@dataclass(frozen=True, slots=True)
class Labelled:
    """A labelled batch to score a model version on: rows of features and their labels."""

    rows: list[list[float]]
    y: list[float]


def parse_score(body: Json) -> Labelled:
    """Read ``{"x": [[features], ...], "y": [labels]}`` (one label per row)."""
    if "x" not in body or "y" not in body:
        raise bad('send {"x": [[features], ...], "y": [label, ...]} with one label per row')
    rows = _rows(body["x"], "x")
    labels = body["y"]
    if not isinstance(labels, list) or len(labels) != len(rows):
        raise bad_field("y", f"expected an array of {len(rows)} numbers (one per row of x)")
    return Labelled(rows, [_number(v, f"y[{i}]") for i, v in enumerate(labels)])


# --- the short form ------------------------------------------------------------------


def parse_predict(body: Json) -> Rows:
    """Read ``{"x": [...]}`` (one row) or ``{"instances": [[...], ...]}``.

    Optional: ``model`` (a name; without it the scorer's serving model answers),
    ``version`` (an integer; without it the latest) and ``id``.
    """
    has_x, has_instances = "x" in body, "instances" in body
    if has_x == has_instances:
        raise bad(
            'send either {"x": [features]} for one prediction or '
            '{"instances": [[features], ...]} for several'
        )
    model = _optional_text(body, "model", MAX_NAME_CHARS)
    version = body.get("version")
    if version is not None and (type(version) is not int or not 1 <= version <= MAX_VERSION):
        raise bad_field(
            "version", f"expected an integer from 1 to {MAX_VERSION}, got {_describe(version)}"
        )
    if version is not None and model is None:
        raise bad("'version' needs 'model': name the model whose version you want")
    request_id = _optional_text(body, "id", MAX_ID_CHARS)
    rows = [_row(body["x"], "x")] if has_x else _rows(body["instances"], "instances")
    return Rows(rows, id=request_id, model=model, version=version, single=has_x)


def predict_response(reply: InferReply, request: Rows, request_id: str) -> Json:
    """The short form's answer: one ``prediction`` for ``x``, ``predictions`` for instances."""
    answer: Json = {"id": request_id, "model": reply.model, "version": reply.version}
    if request.single:
        answer["prediction"] = reply.predictions[0] if reply.predictions else None
    else:
        answer["predictions"] = reply.predictions
    return answer
