"""Reading and writing a regressor as plain numbers: model params and training state.

`Regressor.to_dict` / `from_dict` (the ``params`` of a model message) and
`Regressor.state_dict` / `from_state_dict` (checkpoints to resume training) keep
their place on the class; the checks of what they read, and the translation
between training statistics and plain numbers, live here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from core.errors import ModelError
from core.limits import MAX_ABS_PARAM
from regressors.checks import (
    FloatArray,
    as_targets,
    check_keys,
    check_window,
    get_key,
    get_number,
    get_numbers,
    numbers,
    type_name,
)
from regressors.forgetting import ForgettingQR, check_forget
from regressors.qr import CumulativeQR, WindowQR

#: Largest |coefficient| a model loaded by `Regressor.from_dict` may have (the contract's
#: ``MAX_ABS_PARAM``). With features within the contract's ``MAX_ABS_INPUT`` (1e12) every
#: prediction is then finite: at most ``MAX_PARAMETERS`` terms, each at most
#: 1e15 * 1e12**degree (1e51 at degree 3, 1e135 at the highest degree, 10), so
#: |prediction| <= 2e138 whatever the model (see `core.limits`).
MAX_ABS_COEF = MAX_ABS_PARAM
_COEF_LIMIT = f"{MAX_ABS_COEF:.0e}".replace("e+", "e")  # 1e15

#: Format number of `Regressor.state_dict`.
STATE_FORMAT = 1

Stats = CumulativeQR | WindowQR | ForgettingQR


def resolve_kind(
    data: object, what: str, own_kind: str | None, known: Collection[str]
) -> tuple[str, str]:
    """The kind ``data`` names, checked, and the name of ``data`` for errors.

    ``own_kind`` is the kind of the class called, which ``data`` must name; None
    (the base class) takes any of the ``known`` kinds.
    """
    if not isinstance(data, Mapping):
        raise ModelError(f"{what}: expected an object (dict), got {type_name(data)}")
    kind = get_key(data, "kind", what)
    if own_kind is not None:
        if kind != own_kind:
            raise ModelError(f"{what}: expected kind {own_kind!r}, got {kind!r}")
        return own_kind, f"{own_kind} {what}"
    if not isinstance(kind, str) or kind not in known:
        names = ", ".join(map(repr, sorted(known)))
        raise ModelError(f"{what}: unknown kind {kind!r}; expected one of {names}")
    return kind, f"{kind} {what}"


def read_coefficients(
    params: Mapping[str, Any], where: str, n_params: int, shape_text: str
) -> FloatArray:
    """``[intercept, *coef]`` of model params, each within ±`MAX_ABS_COEF`."""
    intercept = get_number(params, "intercept", where)
    coef = get_numbers(
        params,
        "coef",
        where,
        expected=n_params - 1,
        detail=f"coefficients {shape_text} (intercept apart)",
    )
    theta = np.array([intercept, *coef], dtype=np.float64)
    beyond = np.flatnonzero(np.abs(theta) > MAX_ABS_COEF)
    if beyond.size:
        k = int(beyond[0])
        label = "'intercept'" if k == 0 else f"'coef'[{k - 1}]"
        raise ModelError(
            f"{where}: {label} is {float(theta[k])!r}, beyond ±{_COEF_LIMIT}, the "
            "largest coefficient a model may have; retrain it on scaled features"
        )
    return theta


def read_training_mode(
    state: Mapping[str, Any], hyper_keys: tuple[str, ...], where: str
) -> tuple[int | None, float | None, object]:
    """``window``, ``forget`` and ``detect`` of a training state, its keys and format checked."""
    window = check_window(get_key(state, "window", where))
    forget = check_forget(state.get("forget"))
    detect = state.get("detect", False)
    data_keys: tuple[str, ...] = ("r",) if window is None else ("x", "y")
    if forget is not None:
        data_keys = ("forget", "detect", "streams", "watch")
    check_keys(
        state,
        ("format", "kind", *hyper_keys, "window", "n_features", "n_seen", *data_keys),
        where,
    )
    fmt = get_key(state, "format", where)
    if fmt != STATE_FORMAT or isinstance(fmt, bool):
        raise ModelError(f"{where}: unsupported format {fmt!r}; expected {STATE_FORMAT}")
    return window, forget, detect


def stats_state(stats: Stats | None) -> dict[str, Any]:
    """The training statistics as plain numbers (the data keys of a training state)."""
    if isinstance(stats, CumulativeQR):
        return {"r": [stats.r[i, i:].tolist() for i in range(stats.m)]}
    if isinstance(stats, ForgettingQR):
        return {"streams": stats.state(), "watch": stats.watch_state()}
    if isinstance(stats, WindowQR):
        slots = np.arange(stats.start, stats.n_seen) % stats.window
        return {"x": stats.x[slots].tolist(), "y": stats.y[slots].tolist()}
    return {}


def load_stats(
    stats: Stats,
    state: Mapping[str, Any],
    where: str,
    *,
    n_seen: int,
    shape_text: str,
    check_rows: Callable[[FloatArray, int], FloatArray],
) -> None:
    """Fill fresh training statistics from the data keys of a training state."""
    if isinstance(stats, CumulativeQR):
        rows = get_key(state, "r", where)
        m = stats.m
        if not isinstance(rows, list) or len(rows) != m:
            raise ModelError(
                f"{where}: 'r' must be a list of {m} rows for {m - 1} coefficients {shape_text}"
            )
        for i, row in enumerate(rows):
            detail = f"numbers in 'r'[{i}] (the upper triangle of R)"
            stats.r[i, i:] = numbers(row, where, f"'r'[{i}]", m - i, detail)
        stats.n_seen = n_seen
    elif isinstance(stats, ForgettingQR):
        stats.load(get_key(state, "streams", where), state.get("watch"), n_seen, where)
    else:
        _load_window(stats, state, where, n_seen, check_rows)


def _load_window(
    stats: WindowQR,
    state: Mapping[str, Any],
    where: str,
    n_seen: int,
    check_rows: Callable[[FloatArray, int], FloatArray],
) -> None:
    """Fill a window's statistics from the rows ``x`` and targets ``y`` of a training state."""
    n_features = stats.x.shape[1]
    count = min(n_seen, stats.window)
    ys = get_numbers(state, "y", where, expected=count, detail="targets in 'y'")
    xs = get_key(state, "x", where)
    if not isinstance(xs, list) or len(xs) != count:
        got = len(xs) if isinstance(xs, list) else type_name(xs)
        raise ModelError(f"{where}: 'x' must be a list of {count} rows, got {got}")
    detail = "features per row of 'x'"
    x = np.array(
        [numbers(row, where, f"'x'[{i}]", n_features, detail) for i, row in enumerate(xs)],
        dtype=np.float64,
    ).reshape(count, n_features)
    y = as_targets(np.array(ys, dtype=np.float64), count, what=f"{where}: 'y'")
    stats.load(check_rows(x, n_features), y, n_seen)
