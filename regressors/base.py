"""Regressor: the fit / predict / score contract, with streaming least squares by incremental QR.

Every regressor here is ordinary least squares on a fixed expansion of the input
features (a design matrix whose first column is the constant 1). What differs
between them is only the expansion; training, solving, scoring and
(de)serialization live in `Regressor`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Self, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from core.errors import ModelError
from core.limits import MAX_ABS_INPUT, MAX_ABS_PARAM

FloatArray = NDArray[np.float64]

#: Singular values below ``RCOND`` times the largest one (of the column-scaled
#: R factor) are treated as zero: the solve is then minimum-norm least squares.
RCOND = 1e-10

#: Most coefficients (intercept included) a regressor may have; more is a mistake in
#: the configuration (e.g. degree 6 over 40 features) rather than a model.
MAX_PARAMETERS = 2000

#: Largest magnitude allowed for a target or for a design-matrix entry (e.g. x**5).
#: Far beyond any sensible feature scale; it keeps every sum of squares finite.
MAX_ABS_VALUE = 1e100

#: Largest |coefficient| a model loaded by `Regressor.from_dict` may have (the contract's
#: ``MAX_ABS_PARAM``). With features within the contract's ``MAX_ABS_INPUT`` (1e12) every
#: prediction is then finite: at most ``MAX_PARAMETERS`` terms, each at most
#: 1e15 * 1e12**degree (1e51 at degree 3, 1e135 at the highest degree, 10), so
#: |prediction| <= 2e138 whatever the model (see `core.limits`).
MAX_ABS_COEF = MAX_ABS_PARAM
_COEF_LIMIT = f"{MAX_ABS_COEF:.0e}".replace("e+", "e")  # 1e15

#: Format number of `Regressor.state_dict`.
STATE_FORMAT = 1

_CHUNK_ROWS = 8192  # rows per QR update: bounds the memory of one huge batch


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


def _check_window(window: object) -> int | None:
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


def _type_name(value: object) -> str:
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
        raise ModelError(f"{where}: {key!r} must be an integer, got {_type_name(value)}")
    if value < minimum:
        raise ModelError(f"{where}: {key!r} must be >= {minimum}, got {value}")
    return value


def _number(value: object, where: str, label: str) -> float:
    if not _is_number(value):
        raise ModelError(f"{where}: {label} must be a number, got {_type_name(value)}")
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise ModelError(f"{where}: {label} must be a finite number, got {value!r}")
    return number


def get_number(data: Mapping[str, Any], key: str, where: str) -> float:
    """Return ``data[key]`` as a finite float (ints accepted, bools and strings not)."""
    return _number(get_key(data, key, where), where, repr(key))


def _numbers(value: object, where: str, label: str, expected: int, detail: str) -> list[float]:
    if not isinstance(value, (list, tuple)):
        raise ModelError(f"{where}: {label} must be a list of numbers, got {_type_name(value)}")
    if len(value) != expected:
        raise ModelError(f"{where}: expected {expected} {detail}, got {len(value)}")
    return [_number(v, where, f"{label}[{i}]") for i, v in enumerate(value)]


def get_numbers(
    data: Mapping[str, Any], key: str, where: str, *, expected: int, detail: str
) -> list[float]:
    """Return ``data[key]``: a list of exactly ``expected`` finite numbers, or raise."""
    return _numbers(get_key(data, key, where), where, repr(key), expected, detail)


def check_keys(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    """Raise `ModelError` if ``data`` has a key outside ``allowed`` (a typo is caught early)."""
    extra = sorted(str(k) for k in data if k not in allowed)
    if extra:
        raise ModelError(
            f"{where}: unexpected key {extra[0]!r}; allowed keys are {', '.join(allowed)}"
        )


# -- sufficient statistics: R factors of the augmented design [Z | y] ---------------------------


def _r_factor(a: FloatArray, m: int) -> FloatArray:
    """Return the (m, m) upper-triangular R of the QR of ``a`` (k, m), zero-padded if k < m."""
    # numpy's stubs type every mode of qr as QRResult; mode="r" returns the array R alone
    if a.shape[0] >= m:
        return cast("FloatArray", np.linalg.qr(a, mode="r"))
    out = np.zeros((m, m))
    if a.shape[0]:
        out[: a.shape[0]] = cast("FloatArray", np.linalg.qr(a, mode="r"))
    return out


def solve_r(r_aug: FloatArray) -> FloatArray:
    """Return least-squares coefficients from the R factor of the augmented design ``[Z | y]``.

    ``R^T R = [Z y]^T [Z y]``, so min ||Z w - y|| is min ||R[:p, :p] w - R[:p, p]||. Columns
    are scaled to unit norm (equilibration) and the system is solved by SVD with relative
    cutoff `RCOND`, which gives the minimum-norm solution (in scaled coordinates) when the
    design is rank deficient instead of failing.
    """
    p = r_aug.shape[0] - 1
    r = r_aug[:p, :p]
    scale = np.sqrt(np.einsum("ij,ij->j", r, r))
    scale[scale == 0.0] = 1.0
    try:
        w = np.linalg.lstsq(r / scale, r_aug[:p, p], rcond=RCOND)[0]
    except np.linalg.LinAlgError as exc:  # pragma: no cover - inputs are checked finite
        raise ModelError(f"least-squares solve failed: {exc}") from exc
    theta: FloatArray = w / scale
    return theta


Expander = Callable[[FloatArray, FloatArray], None]


def _augmented(expand: Expander, x: FloatArray, y: FloatArray, m: int) -> FloatArray:
    a = np.empty((x.shape[0], m), order="F")
    expand(x, a[:, : m - 1])
    a[:, m - 1] = y
    return a


class CumulativeQR:
    """Sufficient statistics of every point seen: the R factor of ``[Z | y]``, O(p^2) memory.

    Each batch is folded in exactly by a Householder QR of ``[R; new rows]`` (incremental
    QR), so nothing like ``Z^T Z`` (whose condition number is squared) is ever formed.
    """

    def __init__(self, n_params: int, expand: Expander) -> None:
        self.m = n_params + 1
        self.expand = expand
        self.r = np.zeros((self.m, self.m))
        self.n_seen = 0

    def add(self, x: FloatArray, y: FloatArray) -> None:
        """Fold the rows ``x`` (raw features) with targets ``y`` into R."""
        m = self.m
        for start in range(0, x.shape[0], _CHUNK_ROWS):
            xs = x[start : start + _CHUNK_ROWS]
            a = np.empty((m + xs.shape[0], m), order="F")
            a[:m] = self.r
            self.expand(xs, a[m:, : m - 1])
            a[m:, m - 1] = y[start : start + _CHUNK_ROWS]
            r = _r_factor(a, m)
            if not np.isfinite(r).all():  # pragma: no cover - inputs are bounded
                raise ModelError("training statistics overflowed; scale the features down")
            self.r = r
            self.n_seen += xs.shape[0]

    def r_factor(self) -> FloatArray:
        """Return the R factor of ``[Z | y]`` over every point seen."""
        return self.r


class WindowQR:
    """Sufficient statistics of the last ``window`` points, exact (no down-dating).

    The raw rows of the window sit in a ring buffer (point number ``i`` in slot
    ``i % window``), so a point leaving the window is simply no longer used. Point
    numbers are cut into blocks of ``block`` consecutive ones. The window is
    [head: the rest of a block that started before the window] + [complete blocks] +
    [tail: the block being filled]. The tail's R factor is updated as rows arrive and,
    once the block is complete, pushed on a two-stack queue of block R factors that
    keeps the R of all complete blocks at amortized O(p^3) per block (blocks leave
    from the front, arrive at the back). The window's R is the QR of [head rows; queue
    aggregates; tail R]: O((block + 3 p) p^2) work whatever the window size.
    """

    def __init__(self, window: int, n_features: int, n_params: int, expand: Expander) -> None:
        self.window = window
        self.m = n_params + 1
        self.expand = expand
        self.x = np.zeros((window, n_features))
        self.y = np.zeros(window)
        self.n_seen = 0
        self.block = min(window, max(256, 2 * self.m, window // 256))
        self._reset(0)

    def _reset(self, first_point: int) -> None:
        self.first_block = self.end_block = first_point // self.block  # queue: [first, end)
        self.front: list[FloatArray] = []  # front[k]: R of blocks first+len-1-k .. back start
        self.back: list[FloatArray] = []  # R of each block from the back start to end
        self.back_r: FloatArray | None = None  # R of all back blocks
        self.tail_r: FloatArray | None = None  # R of the rows of block end_block so far
        self._r: FloatArray | None = None

    @property
    def start(self) -> int:
        """Number of the oldest point in the window."""
        return max(0, self.n_seen - self.window)

    def _rows(self, lo: int, hi: int) -> tuple[FloatArray, FloatArray]:
        slots = np.arange(lo, hi) % self.window
        return self.x[slots], self.y[slots]

    def _aug(self, lo: int, hi: int) -> FloatArray:
        x, y = self._rows(lo, hi)
        return _augmented(self.expand, x, y, self.m)

    def _combine(self, r1: FloatArray, r2: FloatArray) -> FloatArray:
        return _r_factor(np.vstack([r1, r2]), self.m)

    def _push(self, rs: list[FloatArray]) -> None:
        self.back.extend(rs)
        parts = rs if self.back_r is None else [self.back_r, *rs]
        self.back_r = parts[0] if len(parts) == 1 else _r_factor(np.vstack(parts), self.m)
        self.end_block += len(rs)

    def _pop(self) -> None:
        if not self.front:  # move the back stack over, with suffix aggregates
            agg: FloatArray | None = None
            for r in reversed(self.back):
                agg = r if agg is None else self._combine(r, agg)
                self.front.append(agg)
            self.back, self.back_r = [], None
        self.front.pop()
        self.first_block += 1

    def _ingest(self, lo: int, hi: int) -> None:
        b, m = self.block, self.m
        if lo % b:  # finish (or extend) the block being filled
            end = min(hi, (lo // b + 1) * b)
            a = self._aug(lo, end)
            r = _r_factor(a if self.tail_r is None else np.vstack([self.tail_r, a]), m)
            self.tail_r = None
            if end % b:
                self.tail_r = r
            else:
                self._push([r])
            lo = end
        n_blocks = (hi - lo) // b
        if n_blocks:  # whole blocks: one stacked QR for all of them
            a = self._aug(lo, lo + n_blocks * b).reshape(n_blocks, b, m)
            rs = np.zeros((n_blocks, m, m))  # block R's, zero-padded if block < m rows
            rs[:, : min(b, m)] = cast("FloatArray", np.linalg.qr(a, mode="r"))
            self._push(list(rs))
            lo += n_blocks * b
        if lo < hi:
            self.tail_r = _r_factor(self._aug(lo, hi), m)

    def add(self, x: FloatArray, y: FloatArray) -> None:
        """Append rows; those pushed out of the window are dropped."""
        n, w = x.shape[0], self.window
        keep = min(n, w)
        first = self.n_seen
        slots = np.arange(first + n - keep, first + n) % w
        self.x[slots] = x[n - keep :]
        self.y[slots] = y[n - keep :]
        self.n_seen += n
        if n >= w:  # the whole window is new
            self._reset(self.n_seen - w)
            first = self.n_seen - w
        # A block starting before the window was pushed from partial or stale rows at
        # worst; it leaves the queue here, before any use.
        self._ingest(first, self.n_seen)
        while self.first_block < self.end_block and self.first_block * self.block < self.start:
            self._pop()
        self._r = None

    def r_factor(self) -> FloatArray:
        """Return the R factor of ``[Z | y]`` over the points in the window."""
        if self._r is None:
            parts = [self._aug(self.start, max(self.start, self.first_block * self.block))]
            parts += [r for r in (self.back_r, self.tail_r) if r is not None]
            if self.front:
                parts.append(self.front[-1])
            self._r = _r_factor(np.vstack(parts), self.m)
        return self._r

    def load(self, x: FloatArray, y: FloatArray, n_seen: int) -> None:
        """Set the window's rows (oldest first) as if ``n_seen`` points had been added."""
        self.n_seen = n_seen - x.shape[0]
        self._reset(self.n_seen)
        self.add(x, y)


# -- the contract ---------------------------------------------------------------------------------


class Regressor(ABC):
    """Least squares with intercept on a feature expansion: fit, predict, score, stream, save.

    Training
        ``fit(X, y)`` starts over; ``partial_fit(X, y)`` adds a batch. Either way only
        sufficient statistics are kept, never all the points: in cumulative mode
        (``window=None``, the default) the R factor of the augmented design ``[Z | y]``,
        updated by incremental Householder QR; with ``window=W`` the last W raw rows in
        a ring buffer plus a queue of R factors of blocks of them (see `WindowQR`), so
        the fit is exactly the fit on the last W points. ``fit`` equals ``partial_fit``
        on the same rows in any chunking, up to rounding. Batches are processed with
        vectorized numpy (no per-row Python loop).

    Numerical stability
        The normal equations ``Z^T Z`` are never formed (they square the condition
        number). Coefficients are solved from R after scaling its columns to unit norm,
        by SVD (``numpy.linalg.lstsq``, ``rcond=RCOND``). On well-conditioned data they
        agree with ``numpy.linalg.lstsq`` on the full design matrix (about 1e-9 relative
        even for degree 5 on [-10, 10]).

    Ill-conditioned or rank-deficient data
        Never raises: directions whose scaled singular value is below ``RCOND`` times the
        largest are dropped, giving the minimum-norm least-squares solution in the scaled
        coordinates. Duplicate or constant features and fewer points than coefficients
        all give finite coefficients whose predictions on the training points are the
        least-squares fitted values. Features that are far from 0 compared with their
        spread (raw timestamps, say) make the monomial basis itself ill-conditioned:
        center them upstream.

    Input
        ``X`` is a 2-D array (rows, features) of finite numbers; a 1-D array is taken as
        ONE row. ``y`` is 1-D with one finite value per row. Inputs are never modified.
        Wrong feature counts, NaN/inf, values whose expansion would exceed ±1e100 (for
        training; predicting takes any value within the contract's ±1e12 too), and use
        before fitting raise `ModelError`.

    Saving
        ``to_dict()`` gives the model as plain numbers (the ``params`` of a model
        message); see the subclass for the schema. A model made by ``from_dict`` predicts
        exactly like the original but has no training statistics: ``partial_fit`` raises
        `ModelError`, ``fit`` starts over (cumulative). ``state_dict()`` /
        ``from_state_dict()`` save and restore the training state exactly, as plain
        numbers, so training can resume after a restart.
    """

    KIND: ClassVar[str]
    HYPER_KEYS: ClassVar[tuple[str, ...]] = ()
    _registry: ClassVar[dict[str, type[Regressor]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("KIND")
        if isinstance(kind, str):
            Regressor._registry[kind] = cls

    def __init__(self, *, window: int | None = None) -> None:
        self._window = _check_window(window)
        self._n_features: int | None = None
        self._stats: CumulativeQR | WindowQR | None = None
        self._theta: FloatArray | None = None
        self._trainable = True

    # -- what a subclass provides -----------------------------------------------------------

    @abstractmethod
    def _count_params(self, n_features: int) -> int:
        """Return the number of coefficients, intercept included, for ``n_features``."""

    @abstractmethod
    def _expand_into(self, x: FloatArray, out: FloatArray) -> None:
        """Write the design rows of ``x`` (first column all 1) into ``out`` (rows, p)."""

    @abstractmethod
    def _max_abs_input(self) -> float:
        """Return the largest |feature| whose expansion stays within `MAX_ABS_VALUE`."""

    @abstractmethod
    def _shape_text(self, n_features: int) -> str:
        """Describe the coefficient layout, e.g. 'for 2 features at degree 3'."""

    def params(self) -> dict[str, int | None]:
        """Return the constructor's hyper-parameters: ``make_regressor(kind, **params())``."""
        return {"window": self._window}

    @classmethod
    def _from_hyper(cls, data: Mapping[str, Any], where: str) -> Self:
        """Build an empty regressor from the hyper-parameters found in ``data``."""
        del data, where
        return cls()

    # -- properties --------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """Model kind, as in ``to_dict()["kind"]``: 'multivariate' or 'polynomial'."""
        return self.KIND

    @property
    def n_features(self) -> int | None:
        """Number of input features, known after the first fit (None before)."""
        return self._n_features

    @property
    def n_params(self) -> int | None:
        """Number of coefficients, intercept included (None before the first fit)."""
        return None if self._n_features is None else self._count_params(self._n_features)

    @property
    def window(self) -> int | None:
        """Sliding-window size in points, or None for cumulative training."""
        return self._window

    @property
    def max_abs_input(self) -> float:
        """Largest |feature| accepted: its expansion (e.g. x**degree) stays within ±1e100."""
        return self._max_abs_input()

    @property
    def is_fitted(self) -> bool:
        """True once coefficients exist: after fitting at least one point, or from_dict."""
        return self._theta is not None or (self._stats is not None and self._stats.n_seen > 0)

    @property
    def is_trainable(self) -> bool:
        """False for a model loaded by `from_dict`, which has coefficients but no statistics."""
        return self._trainable

    @property
    def n_seen(self) -> int:
        """Number of points trained on since the last ``fit`` (0 for a loaded model)."""
        return 0 if self._stats is None else self._stats.n_seen

    @property
    def n_in_window(self) -> int:
        """Number of points the current coefficients are fitted to."""
        if self._window is None:
            return self.n_seen
        return min(self.n_seen, self._window)

    @property
    def intercept(self) -> float:
        """The constant term."""
        return float(self._coefficients()[0])

    @property
    def coef(self) -> FloatArray:
        """The coefficients of the design columns after the constant one (a copy)."""
        return self._coefficients()[1:].copy()

    # -- training ----------------------------------------------------------------------------

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Forget everything and fit to ``X`` (rows, features) and ``y``; return self."""
        x = self._rows(X, None)
        yv = as_targets(y, x.shape[0])
        if x.shape[0] == 0:
            raise ModelError("fit: needs at least one point, got 0 rows")
        self._start(x.shape[1])
        self._add(x, yv)
        return self

    def partial_fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Add a batch of points to the training statistics; return self."""
        if not self._trainable:
            raise ModelError(
                f"{self.kind} model loaded from params has no training statistics: "
                "use from_state_dict() to resume training, or fit() to start over"
            )
        x = self._rows(X, self._n_features)
        yv = as_targets(y, x.shape[0])
        if self._stats is None:
            self._start(x.shape[1])
        if x.shape[0]:
            self._add(x, yv)
        return self

    def _start(self, n_features: int) -> None:
        n_params = self._count_params(n_features)
        self._n_features = n_features
        self._theta = None
        self._trainable = True
        if self._window is None:
            self._stats = CumulativeQR(n_params, self._expand_into)
        else:
            self._stats = WindowQR(self._window, n_features, n_params, self._expand_into)

    def _add(self, x: FloatArray, y: FloatArray) -> None:
        assert self._stats is not None
        self._stats.add(x, y)
        self._theta = None

    def _rows(self, X: ArrayLike, n_features: int | None, *, predict: bool = False) -> FloatArray:
        x = as_rows(X, n_features)
        limit = self._max_abs_input()
        if predict:  # any point within the contract's limits has a finite prediction
            limit = max(limit, MAX_ABS_INPUT)
        if x.size and float(np.max(np.abs(x))) > limit:
            raise ModelError(
                f"X: values up to {float(np.max(np.abs(x))):.3g} overflow the {self.kind} "
                f"expansion; keep features within ±{limit:.3g}"
            )
        return x

    def _coefficients(self) -> FloatArray:
        if self._theta is None:
            if self._stats is None or self._stats.n_seen == 0:
                raise ModelError(f"{self.kind} model is not fitted: call fit or partial_fit")
            self._theta = solve_r(self._stats.r_factor())
        return self._theta

    # -- using the model ---------------------------------------------------------------------

    def design(self, X: ArrayLike) -> FloatArray:
        """Return the design matrix (first column all 1) that the coefficients apply to."""
        x = self._rows(X, self._n_features, predict=True)
        out = np.empty((x.shape[0], self._count_params(x.shape[1])))
        self._expand_into(x, out)
        return out

    def predict(self, X: ArrayLike) -> FloatArray:
        """Return one prediction per row of ``X`` (a 1-D array; length 1 for a 1-D ``X``)."""
        theta = self._coefficients()
        prediction: FloatArray = self.design(X) @ theta
        return prediction

    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Return R2 of the predictions for ``X`` against ``y`` (see `r2_score`)."""
        prediction = self.predict(X)
        yv = as_targets(y, prediction.shape[0])
        if yv.shape[0] == 0:
            raise ModelError("score: needs at least one point, got 0 rows")
        return r2_score(yv, prediction)

    # -- model params (coefficients only) ----------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the fitted model as JSON-safe plain numbers (schema: see the subclass)."""
        theta = self._coefficients()
        assert self._n_features is not None
        return {
            "kind": self.kind,
            "n_features": self._n_features,
            **{k: v for k, v in self.params().items() if k in self.HYPER_KEYS},
            "intercept": float(theta[0]),
            "coef": theta[1:].tolist(),
        }

    @classmethod
    def _resolve(cls, data: object, what: str) -> tuple[type[Regressor], str]:
        if not isinstance(data, Mapping):
            raise ModelError(f"{what}: expected an object (dict), got {_type_name(data)}")
        kind = get_key(data, "kind", what)
        if cls is not Regressor:
            if kind != cls.KIND:
                raise ModelError(f"{what}: expected kind {cls.KIND!r}, got {kind!r}")
            return cls, f"{cls.KIND} {what}"
        known = sorted(Regressor._registry)
        if not isinstance(kind, str) or kind not in Regressor._registry:
            raise ModelError(
                f"{what}: unknown kind {kind!r}; expected one of {', '.join(map(repr, known))}"
            )
        return Regressor._registry[kind], f"{kind} {what}"

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> Regressor:
        """Rebuild a model from `to_dict` output, checking every field; raise `ModelError`.

        Called on `Regressor` it dispatches on ``params["kind"]``; called on a subclass
        the kind must be that subclass's. Unknown keys are rejected.
        """
        target, where = cls._resolve(params, "params")
        check_keys(params, ("kind", "n_features", *target.HYPER_KEYS, "intercept", "coef"), where)
        n_features = get_int(params, "n_features", where, minimum=1)
        model = target._from_hyper(params, where)
        n_params = model._count_params(n_features)
        intercept = get_number(params, "intercept", where)
        coef = get_numbers(
            params,
            "coef",
            where,
            expected=n_params - 1,
            detail=f"coefficients {model._shape_text(n_features)} (intercept apart)",
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
        model._n_features = n_features
        model._theta = theta
        model._trainable = False
        return model

    # -- training state (checkpoints) --------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Return the full training state as JSON-safe plain numbers.

        Keys: ``format`` (1), ``kind``, the hyper-parameters (``degree``), ``window``,
        ``n_features`` (None before any data), ``n_seen``; then, in cumulative mode,
        ``r``: the upper triangle of the (p+1, p+1) R factor of ``[Z | y]`` as rows
        ``r[i] = R[i, i:]`` (O(p^2) numbers whatever the number of points), or in window
        mode ``x`` (the window's rows, oldest first) and ``y`` (their targets).
        """
        if not self._trainable:
            raise ModelError(f"{self.kind} model loaded from params has no training state")
        state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "kind": self.kind,
            **self.params(),
            "n_features": self._n_features,
            "n_seen": self.n_seen,
        }
        stats = self._stats
        if isinstance(stats, CumulativeQR):
            state["r"] = [stats.r[i, i:].tolist() for i in range(stats.m)]
        elif isinstance(stats, WindowQR):
            x, y = stats._rows(stats.start, stats.n_seen)
            state["x"] = x.tolist()
            state["y"] = y.tolist()
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Regressor:
        """Rebuild a trainable regressor from `state_dict` output; raise `ModelError` if bad.

        Fed the same further points, it ends with the same coefficients as a regressor
        that was never interrupted.
        """
        target, where = cls._resolve(state, "state")
        window = _check_window(get_key(state, "window", where))
        data_keys = ("r",) if window is None else ("x", "y")
        check_keys(
            state,
            ("format", "kind", *target.HYPER_KEYS, "window", "n_features", "n_seen", *data_keys),
            where,
        )
        fmt = get_key(state, "format", where)
        if fmt != STATE_FORMAT or isinstance(fmt, bool):
            raise ModelError(f"{where}: unsupported format {fmt!r}; expected {STATE_FORMAT}")
        model = target._from_hyper(state, where)
        model._window = window
        n_seen = get_int(state, "n_seen", where, minimum=0)
        if get_key(state, "n_features", where) is None:
            if n_seen:
                raise ModelError(f"{where}: n_features is null but n_seen is {n_seen}")
            return model
        n_features = get_int(state, "n_features", where, minimum=1)
        model._start(n_features)
        stats = model._stats
        if isinstance(stats, CumulativeQR):
            rows = get_key(state, "r", where)
            m = stats.m
            if not isinstance(rows, list) or len(rows) != m:
                raise ModelError(
                    f"{where}: 'r' must be a list of {m} rows for {m - 1} coefficients "
                    f"{model._shape_text(n_features)}"
                )
            for i, row in enumerate(rows):
                detail = f"numbers in 'r'[{i}] (the upper triangle of R)"
                stats.r[i, i:] = _numbers(row, where, f"'r'[{i}]", m - i, detail)
            stats.n_seen = n_seen
        elif isinstance(stats, WindowQR):
            count = min(n_seen, stats.window)
            ys = get_numbers(state, "y", where, expected=count, detail="targets in 'y'")
            xs = get_key(state, "x", where)
            if not isinstance(xs, list) or len(xs) != count:
                got = len(xs) if isinstance(xs, list) else _type_name(xs)
                raise ModelError(f"{where}: 'x' must be a list of {count} rows, got {got}")
            detail = "features per row of 'x'"
            x = np.array(
                [_numbers(row, where, f"'x'[{i}]", n_features, detail) for i, row in enumerate(xs)],
                dtype=np.float64,
            ).reshape(count, n_features)
            y = as_targets(np.array(ys, dtype=np.float64), count, what=f"{where}: 'y'")
            stats.load(model._rows(x, n_features), y, n_seen)
        return model
