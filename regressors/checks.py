"""Input and plain-number checks of the regressors: arrays in, JSON params and states in.

Every check raises `ModelError` with a message that says what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from core.errors import ModelError

FloatArray = NDArray[np.float64]

#: Largest magnitude allowed for a target or for a design-matrix entry (e.g. x**5).
#: Far beyond any sensible feature scale; it keeps every sum of squares finite.
MAX_ABS_VALUE = 1e100

# -- input checks -----------------------------------------------------------------------------


def as_rows(x: ArrayLike, n_features: int | None, *, what: str = "X") -> FloatArray:
    """Return ``x`` as a float64 2-D array (rows, features), or raise `ModelError`.

    A 1-D ``x`` is one row. The result may share memory with ``x``: never write to it.
    """
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{what}: expected a 2-D array of numbers ({exc})") from exc
    if arr.dtype.kind not in "iuf":
        raise ModelError(f"{what}: expected numbers, got an array of {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    elif arr.ndim != 2:
        raise ModelError(f"{what}: expected a 2-D array (rows, features), got {arr.ndim}-D")
    if n_features is not None and arr.shape[1] != n_features:
        raise ModelError(f"expected {n_features} features, got {arr.shape[1]}")
    if arr.shape[1] == 0:
        raise ModelError(f"{what}: expected at least one feature, got 0 columns")
    out = arr.astype(np.float64, copy=False)
    if not np.isfinite(out).all():
        raise ModelError(f"{what}: contains NaN or infinity")
    return out


def as_targets(y: ArrayLike, n_rows: int, *, what: str = "y") -> FloatArray:
    """Return ``y`` as a float64 1-D array of ``n_rows`` finite values, or raise `ModelError`."""
    try:
        arr = np.asarray(y)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{what}: expected a 1-D array of numbers ({exc})") from exc
    if arr.dtype.kind not in "iuf":
        raise ModelError(f"{what}: expected numbers, got an array of {arr.dtype}")
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ModelError(f"{what}: expected a 1-D array, got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ModelError(f"{what}: expected {n_rows} values (one per row of X), got {arr.shape[0]}")
    out = arr.astype(np.float64, copy=False)
    if out.size and not float(np.max(np.abs(out))) <= MAX_ABS_VALUE:
        raise ModelError(f"{what}: contains NaN, infinity or values beyond ±{MAX_ABS_VALUE:.0e}")
    return out


def check_window(window: object) -> int | None:
    if window is None:
        return None
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ModelError(f"window: expected a positive integer or None, got {window!r}")
    return window


def r2_score(y: FloatArray, y_pred: FloatArray) -> float:
    """Return the coefficient of determination ``1 - SS_res / SS_tot``.

    When every ``y`` is the same (SS_tot == 0) R2 is undefined; it is then 1.0 if every
    prediction is within 1e-9 of ``y`` (relative to max(1, |y|)) and 0.0 otherwise, as in
    scikit-learn, so the result is always a finite float.
    """
    resid = y - y_pred
    ss_res = float(resid @ resid)
    centered = y - y.mean()
    ss_tot = float(centered @ centered)
    if ss_tot == 0.0:
        tol = 1e-9 * max(1.0, float(np.max(np.abs(y))))
        return 1.0 if float(np.max(np.abs(resid))) <= tol else 0.0
    return 1.0 - ss_res / ss_tot


# -- plain-number (JSON) checks used by from_dict / from_state_dict -----------------------------


def type_name(value: object) -> str:
    return repr(value) if isinstance(value, (str, bool)) or value is None else type(value).__name__


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def get_key(data: Mapping[str, Any], key: str, where: str) -> Any:
    """Return ``data[key]``, or raise `ModelError` saying that the key is missing."""
    if key not in data:
        raise ModelError(f"{where}: missing key {key!r}")
    return data[key]


def get_int(data: Mapping[str, Any], key: str, where: str, *, minimum: int) -> int:
    """Return ``data[key]`` as an int >= ``minimum`` (bools rejected), or raise `ModelError`."""
    value = get_key(data, key, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"{where}: {key!r} must be an integer, got {type_name(value)}")
    if value < minimum:
        raise ModelError(f"{where}: {key!r} must be >= {minimum}, got {value}")
    return value


def _number(value: object, where: str, label: str) -> float:
    if not _is_number(value):
        raise ModelError(f"{where}: {label} must be a number, got {type_name(value)}")
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise ModelError(f"{where}: {label} must be a finite number, got {value!r}")
    return number


def get_number(data: Mapping[str, Any], key: str, where: str) -> float:
    """Return ``data[key]`` as a finite float (ints accepted, bools and strings not)."""
    return _number(get_key(data, key, where), where, repr(key))


def numbers(value: object, where: str, label: str, expected: int, detail: str) -> list[float]:
    if not isinstance(value, (list, tuple)):
        raise ModelError(f"{where}: {label} must be a list of numbers, got {type_name(value)}")
    if len(value) != expected:
        raise ModelError(f"{where}: expected {expected} {detail}, got {len(value)}")
    return [_number(v, where, f"{label}[{i}]") for i, v in enumerate(value)]


def get_numbers(
    data: Mapping[str, Any], key: str, where: str, *, expected: int, detail: str
) -> list[float]:
    """Return ``data[key]``: a list of exactly ``expected`` finite numbers, or raise."""
    return numbers(get_key(data, key, where), where, repr(key), expected, detail)


def check_keys(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    """Raise `ModelError` if ``data`` has a key outside ``allowed`` (a typo is caught early)."""
    extra = sorted(str(k) for k in data if k not in allowed)
    if extra:
        raise ModelError(
            f"{where}: unexpected key {extra[0]!r}; allowed keys are {', '.join(allowed)}"
        )
