"""The value checks the contract classes share: one field, its type and its limits.

Each check takes a decoded value and the field's name and returns the value as the
contract class holds it, or raises a ``MessageError`` naming the field, what was
expected and what was found.
"""

from __future__ import annotations

import math
from typing import Any

from bus.messages_json import (
    MAX_ABS_INPUT,
    MAX_ABS_PARAM,
    MAX_FEATURES,
    MAX_VERSION,
    Json,
    describe,
)
from core.errors import MessageError


def _limit(value: float) -> str:
    """A limit as people write it: 1e12, not 1000000000000.0."""
    return f"{value:.0e}".replace("e+", "e")


_INPUT_LIMIT = _limit(MAX_ABS_INPUT)
_PARAM_LIMIT = _limit(MAX_ABS_PARAM)


def required(obj: Json, name: str, path: str | None = None) -> Any:
    """The field ``name`` of ``obj``; missing is an error (named ``path`` when given)."""
    try:
        return obj[name]
    except KeyError:
        raise MessageError("required field is missing", field=path or name) from None


def is_number(value: Any) -> bool:
    """True for a JSON number: an int or a float, not a bool."""
    return type(value) is float or (type(value) is int)


def finite_number(value: Any, name: str) -> float:
    """A number that is finite as a float (an int too big for a float is not)."""
    if not is_number(value):
        raise MessageError(f"expected a number, got {describe(value)}", field=name)
    try:
        number = float(value)
    except OverflowError:  # an integer too big for a float
        number = math.inf
    if not math.isfinite(number):
        raise MessageError(f"expected a finite number, got {describe(value)}", field=name)
    return number


def optional_number(obj: Json, name: str) -> float | None:
    """The finite number in field ``name``, or None when it is absent or null."""
    value = obj.get(name)
    return None if value is None else finite_number(value, name)


def bounded_number(obj: Json, name: str) -> float | None:
    """An optional number within ±MAX_ABS_INPUT (a label)."""
    number = optional_number(obj, name)
    if number is not None and not -MAX_ABS_INPUT <= number <= MAX_ABS_INPUT:
        raise MessageError(
            f"expected a number within ±{_INPUT_LIMIT}, got {describe(obj[name])}", field=name
        )
    return number


def integer(value: Any, name: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer (not a bool) from ``minimum`` to ``maximum`` (no upper limit when None)."""
    if type(value) is not int:
        raise MessageError(f"expected an integer, got {describe(value)}", field=name)
    if value < minimum:
        raise MessageError(f"expected an integer >= {minimum}, got {value}", field=name)
    if maximum is not None and value > maximum:
        raise MessageError(f"expected an integer <= {maximum}, got {value}", field=name)
    return value


def version_number(value: Any, name: str = "version") -> int:
    """A model version: an integer from 1 to MAX_VERSION."""
    return integer(value, name, minimum=1, maximum=MAX_VERSION)


def optional_integer(obj: Json, name: str, *, minimum: int = 0) -> int | None:
    """The integer >= ``minimum`` in field ``name``, or None when absent or null."""
    value = obj.get(name)
    return None if value is None else integer(value, name, minimum=minimum)


def optional_bool(obj: Json, name: str) -> bool:
    """The boolean in field ``name``; absent or null is False."""
    value = obj.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise MessageError(f"expected true or false, got {describe(value)}", field=name)
    return value


def string(value: Any, name: str, max_chars: int) -> str:
    """A string of 1 to ``max_chars`` characters."""
    if not isinstance(value, str):
        raise MessageError(f"expected a string, got {describe(value)}", field=name)
    if not 1 <= len(value) <= max_chars:
        raise MessageError(f"expected 1 to {max_chars} characters, got {len(value)}", field=name)
    return value


def features(value: Any, name: str) -> list[float]:
    """A non-empty array of at most MAX_FEATURES numbers within ±MAX_ABS_INPUT."""
    if not isinstance(value, list):
        raise MessageError(
            f"expected an array of finite numbers, got {describe(value)}", field=name
        )
    if not value:
        raise MessageError("expected at least one feature, got an empty array", field=name)
    if len(value) > MAX_FEATURES:
        raise MessageError(
            f"expected at most {MAX_FEATURES} features, got {len(value)}", field=name
        )
    out = []
    for i, item in enumerate(value):
        if not is_number(item):
            raise MessageError(f"expected a number, got {describe(item)}", field=f"{name}[{i}]")
        try:
            number = float(item)
        except OverflowError:  # an integer too big for a float
            number = math.inf
        if not math.isfinite(number):
            raise MessageError(
                f"expected a finite number, got {describe(item)}", field=f"{name}[{i}]"
            )
        if not -MAX_ABS_INPUT <= number <= MAX_ABS_INPUT:
            raise MessageError(
                f"expected numbers within ±{_INPUT_LIMIT}, got {describe(item)} at index {i}",
                field=name,
            )
        out.append(number)
    return out


def json_object(value: Any, name: str) -> Json:
    """A JSON object."""
    if not isinstance(value, dict):
        raise MessageError(f"expected an object, got {describe(value)}", field=name)
    return value


def model_params(value: Any) -> Json:
    """A model's params: an object whose numbers are all within ±MAX_ABS_PARAM."""
    params = json_object(value, "params")
    stack: list[tuple[Any, str]] = [(params, "params")]
    while stack:  # no recursion: params nested deeply are refused, not a crash
        item, path = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, f"{path}.{k}") for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(item))))
        elif is_number(item) and not -MAX_ABS_PARAM <= item <= MAX_ABS_PARAM:
            raise MessageError(
                f"expected a number within ±{_PARAM_LIMIT}, got {describe(item)}",
                field=path if len(path) <= 80 else path[:77] + "...",
            )
    return params


def quality(value: Any, name: str) -> dict[str, float | None]:
    """A model's training quality: an object of r2, rmse and mae, each a number or null."""
    obj = json_object(value, name)
    return {
        k: None if obj.get(k) is None else finite_number(obj[k], f"{name}.{k}")
        for k in ("r2", "rmse", "mae")
    }
