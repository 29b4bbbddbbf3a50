"""The message contract: parse and validate from bytes, encode to bytes.

Every value on the bus is a UTF-8 JSON object. Unknown fields are ignored,
missing required fields and values of the wrong type are a ``MessageError``
whose text names the field, what was expected and what was found.
Non-finite numbers (NaN, Infinity, overflow) are rejected everywhere.

Input limits, the same for every reader (scorer, trainer, gateway; `bus.codec`
applies them too): a feature or label is a number within ±`MAX_ABS_INPUT`; a
model coefficient is within ±`MAX_ABS_PARAM`; a version is at most
`MAX_VERSION`, the largest integer every JSON reader holds exactly; arrays and
objects nest at most `MAX_NESTING` deep.

Why these two limits: every prediction of a point within them by a model within
them is a finite number. A prediction is a sum of at most ``MAX_PARAMETERS``
(2000, `regressors.base`) terms ``c * m`` where ``|c| <= 1e15`` and ``m`` is a
monomial of the features of degree k <= ``MAX_DEGREE`` (10), so
``|m| <= 1e12**k``. At degree 3 (the default polynomial) a model has at most 20
features (C(23, 3) = 1771 terms, the most under 2000), so ``|prediction| <=
1771 * 1e15 * 1e36 < 2e54``; at degree 10 the bound is ``2000 * 1e15 * 1e120 =
2e138``: both far below the float64 limit (1.8e308). Up to degree 6 every
prediction is also within ±1e100, the range the rolling metrics take.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from itertools import accumulate, count
from typing import Any, Literal

from core import limits
from core.errors import MessageError

MAX_MESSAGE_BYTES = 1_000_000
#: Deepest nesting of arrays and objects a message may have. A fixed limit, so that a
#: value is valid or not whatever the stack depth of the code that reads it.
MAX_NESTING = 512
#: Largest magnitude of a feature or a label (points and inference rows).
MAX_ABS_INPUT = limits.MAX_ABS_INPUT
#: Largest magnitude of a number in a model's params (its coefficients).
MAX_ABS_PARAM = limits.MAX_ABS_PARAM
MAX_FEATURES = 10_000
MAX_ID_CHARS = 128
MAX_NAME_CHARS = 128
MAX_INSTANCES = 10_000
#: Largest version (2**53 - 1): beyond it a JSON reader using doubles loses digits.
MAX_VERSION = 2**53 - 1
MODEL_KINDS = ("multivariate", "polynomial")
#: What a model name may be, as said in errors (the trainer's names, the scorer's policy).
MODEL_NAME_RULE = (
    f"1 to {MAX_NAME_CHARS} letters, digits, '.', '_' or '-', the first a letter or digit"
)
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

Json = dict[str, Any]


def is_model_name(value: str) -> bool:
    """True when ``value`` is a model name: `MODEL_NAME_RULE` (the whole text, no newline)."""
    return len(value) <= MAX_NAME_CHARS and _MODEL_NAME.fullmatch(value) is not None


# --- decoding helpers -------------------------------------------------------------


class _Constants:
    """``parse_constant`` for json.loads: keeps NaN and infinities, notes that one was seen."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, name: str) -> float:
        self.seen = True
        return float(name)


def _non_finite(value: Any, path: str) -> tuple[str, float] | None:
    """The path and value of the first non-finite number inside ``value``, if any."""
    if type(value) is float and not math.isfinite(value):
        return path, value
    if isinstance(value, dict):
        items: Any = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub_path, item in items:
        found = _non_finite(item, sub_path)
        if found is not None:
            return found
    return None


def _describe(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        text = repr(value)
    else:
        try:
            text = json.dumps(value)
        except (ValueError, RecursionError):  # too many digits, nested too deeply
            text = f"a JSON {'array' if isinstance(value, list) else type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def _limit(value: float) -> str:
    """A limit as people write it: 1e12, not 1000000000000.0."""
    return f"{value:.0e}".replace("e+", "e")


_INPUT_LIMIT = _limit(MAX_ABS_INPUT)
_PARAM_LIMIT = _limit(MAX_ABS_PARAM)


_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")  # 1 + the change of depth


def _too_deep(text: str) -> bool:
    """True when arrays and objects nest more than MAX_NESTING deep in JSON ``text``."""
    data = _JSON_STRING.sub(b"", text.encode("utf-8", "surrogatepass"))  # brackets in strings
    steps = data.translate(_BRACKET_STEPS, _NOT_BRACKETS)
    for part in (steps[: 4 * MAX_NESTING], steps):  # the usual attack is deep at once
        if max(map(int.__sub__, accumulate(part), count(1)), default=0) > MAX_NESTING:
            return True
    return False


def load_object(raw: bytes | bytearray | str | None) -> Json:
    """Decode one message value into a JSON object, or raise MessageError."""
    if raw is None:
        raise MessageError("expected a JSON object, got an empty value (tombstone)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    constants = _Constants()
    try:
        # Decode here: json.loads would also take UTF-16 and UTF-32 bytes.
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8-sig")
        if text.count("[") + text.count("{") > MAX_NESTING and _too_deep(text):
            raise RecursionError  # refused whatever the stack depth here
        obj = json.loads(text, parse_constant=constants)
    except UnicodeDecodeError as exc:
        raise MessageError(f"not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise MessageError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:  # an integer of more digits than int() takes
        raise MessageError("not JSON: a number has too many digits") from None
    except RecursionError:
        raise MessageError(f"not JSON: nested too deeply (the limit is {MAX_NESTING})") from None
    if not isinstance(obj, dict):
        raise MessageError(f"expected a JSON object, got {_describe(obj)}")
    if constants.seen:
        try:
            found = _non_finite(obj, "")
        except RecursionError:
            raise MessageError("not JSON: nested too deeply") from None
        if found is not None:
            path = found[0] if len(found[0]) <= 80 else found[0][:77] + "..."
            raise MessageError(f"expected a finite number, got {_describe(found[1])}", field=path)
    return obj


def dump_object(obj: Json) -> bytes:
    """Encode a JSON object compactly; refuses NaN and infinities."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _required(obj: Json, name: str, path: str | None = None) -> Any:
    try:
        return obj[name]
    except KeyError:
        raise MessageError("required field is missing", field=path or name) from None


def _is_number(value: Any) -> bool:
    return type(value) is float or (type(value) is int)


def _number(value: Any, name: str) -> float:
    if not _is_number(value):
        raise MessageError(f"expected a number, got {_describe(value)}", field=name)
    try:
        number = float(value)
    except OverflowError:  # an integer too big for a float
        number = math.inf
    if not math.isfinite(number):
        raise MessageError(f"expected a finite number, got {_describe(value)}", field=name)
    return number


def _optional_number(obj: Json, name: str) -> float | None:
    value = obj.get(name)
    return None if value is None else _number(value, name)


def _bounded_number(obj: Json, name: str) -> float | None:
    """An optional number within ±MAX_ABS_INPUT (a label)."""
    number = _optional_number(obj, name)
    if number is not None and not -MAX_ABS_INPUT <= number <= MAX_ABS_INPUT:
        raise MessageError(
            f"expected a number within ±{_INPUT_LIMIT}, got {_describe(obj[name])}", field=name
        )
    return number


def _integer(value: Any, name: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    if type(value) is not int:
        raise MessageError(f"expected an integer, got {_describe(value)}", field=name)
    if value < minimum:
        raise MessageError(f"expected an integer >= {minimum}, got {value}", field=name)
    if maximum is not None and value > maximum:
        raise MessageError(f"expected an integer <= {maximum}, got {value}", field=name)
    return value


def _version(value: Any, name: str = "version") -> int:
    return _integer(value, name, minimum=1, maximum=MAX_VERSION)


def _optional_integer(obj: Json, name: str, *, minimum: int = 0) -> int | None:
    value = obj.get(name)
    return None if value is None else _integer(value, name, minimum=minimum)


def _optional_bool(obj: Json, name: str) -> bool:
    value = obj.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise MessageError(f"expected true or false, got {_describe(value)}", field=name)
    return value


def _string(value: Any, name: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise MessageError(f"expected a string, got {_describe(value)}", field=name)
    if not 1 <= len(value) <= max_chars:
        raise MessageError(f"expected 1 to {max_chars} characters, got {len(value)}", field=name)
    return value


def _features(value: Any, name: str) -> list[float]:
    if not isinstance(value, list):
        raise MessageError(
            f"expected an array of finite numbers, got {_describe(value)}", field=name
        )
    if not value:
        raise MessageError("expected at least one feature, got an empty array", field=name)
    if len(value) > MAX_FEATURES:
        raise MessageError(
            f"expected at most {MAX_FEATURES} features, got {len(value)}", field=name
        )
    out = []
    for i, item in enumerate(value):
        if not _is_number(item):
            raise MessageError(f"expected a number, got {_describe(item)}", field=f"{name}[{i}]")
        try:
            number = float(item)
        except OverflowError:  # an integer too big for a float
            number = math.inf
        if not math.isfinite(number):
            raise MessageError(
                f"expected a finite number, got {_describe(item)}", field=f"{name}[{i}]"
            )
        if not -MAX_ABS_INPUT <= number <= MAX_ABS_INPUT:
            raise MessageError(
                f"expected numbers within ±{_INPUT_LIMIT}, got {_describe(item)} at index {i}",
                field=name,
            )
        out.append(number)
    return out


def _object(value: Any, name: str) -> Json:
    if not isinstance(value, dict):
        raise MessageError(f"expected an object, got {_describe(value)}", field=name)
    return value


def _params(value: Any) -> Json:
    """A model's params: an object whose numbers are all within ±MAX_ABS_PARAM."""
    params = _object(value, "params")
    stack: list[tuple[Any, str]] = [(params, "params")]
    while stack:  # no recursion: params nested deeply are refused, not a crash
        item, path = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, f"{path}.{k}") for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(item))))
        elif _is_number(item) and not -MAX_ABS_PARAM <= item <= MAX_ABS_PARAM:
            raise MessageError(
                f"expected a number within ±{_PARAM_LIMIT}, got {_describe(item)}",
                field=path if len(path) <= 80 else path[:77] + "...",
            )
    return params


# --- the contract's messages ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Point:
    """A point on ``points``: features ``x``, an optional label ``y`` and event time ``ts``.

    Every feature and the label are within ±`MAX_ABS_INPUT`.
    """

    id: str
    x: list[float]
    y: float | None = None
    ts: int | None = None

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | str | None) -> Point:
        """Parse and validate one ``points`` value."""
        return cls.from_json(load_object(raw))

    @classmethod
    def from_json(cls, obj: Json) -> Point:
        """Validate a decoded ``points`` object."""
        return cls(
            id=_string(_required(obj, "id"), "id", MAX_ID_CHARS),
            x=_features(_required(obj, "x"), "x"),
            y=_bounded_number(obj, "y"),
            ts=_optional_integer(obj, "ts"),
        )

    def to_json(self) -> Json:
        """The object form; ``y`` and ``ts`` are left out when unset."""
        obj: Json = {"id": self.id, "x": self.x}
        if self.y is not None:
            obj["y"] = self.y
        if self.ts is not None:
            obj["ts"] = self.ts
        return obj

    def to_bytes(self) -> bytes:
        """Encode for ``points``."""
        return dump_object(self.to_json())


@dataclass(frozen=True, slots=True)
class Prediction:
    """A prediction on ``predictions``: the point's id, the value and the model that made it."""

    id: str
    prediction: float
    model: str
    version: int
    y: float | None
    ts: int

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | str | None) -> Prediction:
        """Parse and validate one ``predictions`` value."""
        obj = load_object(raw)
        return cls(
            id=_string(_required(obj, "id"), "id", MAX_ID_CHARS),
            prediction=_number(_required(obj, "prediction"), "prediction"),
            model=_string(_required(obj, "model"), "model", MAX_NAME_CHARS),
            version=_version(_required(obj, "version")),
            y=_optional_number(obj, "y"),
            ts=_integer(_required(obj, "ts"), "ts"),
        )

    def to_json(self) -> Json:
        """The object form."""
        return {
            "id": self.id,
            "prediction": self.prediction,
            "model": self.model,
            "version": self.version,
            "y": self.y,
            "ts": self.ts,
        }

    def to_bytes(self) -> bytes:
        """Encode for ``predictions``."""
        return dump_object(self.to_json())


def _quality(value: Any, name: str) -> dict[str, float | None]:
    obj = _object(value, name)
    return {
        k: None if obj.get(k) is None else _number(obj[k], f"{name}.{k}")
        for k in ("r2", "rmse", "mae")
    }


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """A model version on the compacted ``models`` topic (key: the model name).

    ``params`` are plain numbers, each within ±`MAX_ABS_PARAM` (checked here);
    their shape is checked by the regressor that loads them
    (``regressors.regressor_from_dict``). ``signature`` is optional: the hex
    HMAC-SHA256 of the rest of the message (see `bus.signing`); readers
    without a key ignore it.
    """

    name: str
    version: int
    kind: Literal["multivariate", "polynomial"]
    n_features: int
    params: Json
    trained_on: Json
    train_score: dict[str, float | None]
    created_at: int
    signature: str | None = None

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | str | None) -> ModelVersion:
        """Parse and validate one ``models`` value."""
        obj = load_object(raw)
        kind = _required(obj, "kind")
        if kind not in MODEL_KINDS:
            raise MessageError(
                f"expected one of {', '.join(MODEL_KINDS)}, got {_describe(kind)}", field="kind"
            )
        n_features = _integer(_required(obj, "n_features"), "n_features", minimum=1)
        if n_features > MAX_FEATURES:
            raise MessageError(
                f"expected at most {MAX_FEATURES}, got {n_features}", field="n_features"
            )
        trained_on = _object(_required(obj, "trained_on"), "trained_on")
        _integer(_required(trained_on, "count", "trained_on.count"), "trained_on.count")
        signature = obj.get("signature")
        return cls(
            name=_string(_required(obj, "name"), "name", MAX_NAME_CHARS),
            version=_version(_required(obj, "version")),
            kind=kind,
            n_features=n_features,
            params=_params(_required(obj, "params")),
            trained_on=trained_on,
            train_score=_quality(_required(obj, "train_score"), "train_score"),
            created_at=_integer(_required(obj, "created_at"), "created_at"),
            signature=None if signature is None else _string(signature, "signature", 128),
        )

    def to_json(self) -> Json:
        """The object form; ``signature`` is left out when unset."""
        obj: Json = {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "n_features": self.n_features,
            "params": self.params,
            "trained_on": self.trained_on,
            "train_score": self.train_score,
            "created_at": self.created_at,
        }
        if self.signature is not None:
            obj["signature"] = self.signature
        return obj

    def to_bytes(self) -> bytes:
        """Encode for ``models``."""
        return dump_object(self.to_json())


@dataclass(frozen=True, slots=True)
class Score:
    """Rolling quality of one model version over its last ``window`` labelled points.

    ``r2`` is null while it is undefined (fewer than two points or a constant label).
    ``drift`` (optional, false when absent) is true when the scorer found a drift in
    this version's residuals since its previous score; ``drift_at`` (optional, epoch
    ms) is when it last found one, and ``drifts`` (optional, 0) how many it found.
    """

    model: str
    version: int
    window: int
    count: int
    r2: float | None
    rmse: float | None
    mae: float | None
    ts: int
    drift: bool = False
    drift_at: int | None = None
    drifts: int = 0

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | str | None) -> Score:
        """Parse and validate one ``scores`` value."""
        obj = load_object(raw)
        return cls(
            model=_string(_required(obj, "model"), "model", MAX_NAME_CHARS),
            version=_version(_required(obj, "version")),
            window=_integer(_required(obj, "window"), "window", minimum=1),
            count=_integer(_required(obj, "count"), "count"),
            r2=_optional_number(obj, "r2"),
            rmse=_optional_number(obj, "rmse"),
            mae=_optional_number(obj, "mae"),
            ts=_integer(_required(obj, "ts"), "ts"),
            drift=_optional_bool(obj, "drift"),
            drift_at=_optional_integer(obj, "drift_at"),
            drifts=_optional_integer(obj, "drifts") or 0,
        )

    def to_json(self) -> Json:
        """The object form (the drift fields only once a drift was found)."""
        obj: Json = {
            "model": self.model,
            "version": self.version,
            "window": self.window,
            "count": self.count,
            "r2": self.r2,
            "rmse": self.rmse,
            "mae": self.mae,
            "ts": self.ts,
        }
        if self.drifts or self.drift or self.drift_at is not None:
            obj.update(drift=self.drift, drift_at=self.drift_at, drifts=self.drifts)
        return obj

    def to_bytes(self) -> bytes:
        """Encode for ``scores``."""
        return dump_object(self.to_json())


# --- request/reply between the gateway and the scorer -----------------------------


@dataclass(frozen=True, slots=True)
class InferRequest:
    """An inference request on ``requests``: rows to predict with a model.

    ``model`` None means the scorer's serving model; ``version`` None its latest version.
    """

    id: str
    instances: list[list[float]]
    model: str | None = None
    version: int | None = None

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | str | None) -> InferRequest:
        """Parse and validate one ``requests`` value."""
        obj = load_object(raw)
        rows = _required(obj, "instances")
        if not isinstance(rows, list) or not rows:
            raise MessageError(
                f"expected a non-empty array of rows, got {_describe(rows)}", field="instances"
            )
        if len(rows) > MAX_INSTANCES:
            raise MessageError(
                f"expected at most {MAX_INSTANCES} rows, got {len(rows)}", field="instances"
            )
        instances = [_features(row, f"instances[{i}]") for i, row in enumerate(rows)]
        width = len(instances[0])
        for i, row in enumerate(instances):
            if len(row) != width:
                raise MessageError(
                    f"every row needs {width} features like the first, got {len(row)}",
                    field=f"instances[{i}]",
                )
        model = obj.get("model")
        return cls(
            id=_string(_required(obj, "id"), "id", MAX_ID_CHARS),
            instances=instances,
            model=None if model is None else _string(model, "model", MAX_NAME_CHARS),
            version=None if obj.get("version") is None else _version(obj["version"]),
        )

    def to_bytes(self) -> bytes:
        """Encode for ``requests``."""
        obj: Json = {"id": self.id, "instances": self.instances}
        if self.model is not None:
            obj["model"] = self.model
        if self.version is not None:
            obj["version"] = self.version
        return dump_object(obj)


@dataclass(frozen=True, slots=True)
class InferReply:
    """The scorer's answer on ``replies``: predictions, or an error with an HTTP-like status."""

    id: str
    model: str | None = None
    version: int | None = None
    predictions: list[float] = field(default_factory=list)
    error: str | None = None
    status: int = 200

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | str | None) -> InferReply:
        """Parse and validate one ``replies`` value."""
        obj = load_object(raw)
        error = obj.get("error")
        if error is not None:
            return cls(
                id=_string(_required(obj, "id"), "id", MAX_ID_CHARS),
                error=str(error),
                status=_integer(obj.get("status", 400), "status", minimum=400),
            )
        predictions = _required(obj, "predictions")
        if not isinstance(predictions, list):
            raise MessageError(
                f"expected an array, got {_describe(predictions)}", field="predictions"
            )
        return cls(
            id=_string(_required(obj, "id"), "id", MAX_ID_CHARS),
            model=_string(_required(obj, "model"), "model", MAX_NAME_CHARS),
            version=_version(_required(obj, "version")),
            predictions=[_number(v, f"predictions[{i}]") for i, v in enumerate(predictions)],
        )

    def to_bytes(self) -> bytes:
        """Encode for ``replies``."""
        if self.error is not None:
            return dump_object({"id": self.id, "error": self.error, "status": self.status})
        return dump_object(
            {
                "id": self.id,
                "model": self.model,
                "version": self.version,
                "predictions": self.predictions,
            }
        )
