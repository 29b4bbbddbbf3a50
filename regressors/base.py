"""Regressor: the fit / predict / score contract, with streaming least squares by incremental QR.

Every regressor here is ordinary least squares on a fixed expansion of the input
features (a design matrix whose first column is the constant 1). What differs
between them is only the expansion; training, solving, scoring and
(de)serialization live in `Regressor`, the checks and translation of what it
saves and loads in `regressors.serialization`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import ArrayLike

from core.errors import ModelError
from core.limits import MAX_ABS_INPUT
from regressors.checks import (
    MAX_ABS_VALUE,
    FloatArray,
    as_rows,
    as_targets,
    check_keys,
    check_window,
    get_int,
    get_key,
    r2_score,
)
from regressors.forgetting import ForgettingQR, check_forget
from regressors.qr import CumulativeQR, WindowQR, solve_r
from regressors.serialization import (
    MAX_ABS_COEF,
    STATE_FORMAT,
    load_stats,
    read_coefficients,
    read_training_mode,
    resolve_kind,
    stats_state,
)

__all__ = [
    "MAX_ABS_COEF",
    "MAX_ABS_VALUE",
    "MAX_PARAMETERS",
    "MIN_POINTS_PER_PARAM",
    "FloatArray",
    "Regressor",
    "as_rows",
    "as_targets",
    "get_int",
    "r2_score",
]

#: Most coefficients (intercept included) a regressor may have; more is a mistake in
#: the configuration (e.g. degree 6 over 40 features) rather than a model.
MAX_PARAMETERS = 2000

#: Points per coefficient a fit must rest on before it is worth serving: with fewer
#: the least-squares fit (nearly) interpolates its points and its errors on new
#: ones are unbounded (a cubic of 6 features, 84 coefficients, on 40 points).
MIN_POINTS_PER_PARAM = 2

# -- the contract ---------------------------------------------------------------------------------


class Regressor(ABC):
    """Least squares with intercept on a feature expansion: fit, predict, score, stream, save.

    Training
        ``fit(X, y)`` starts over; ``partial_fit(X, y)`` adds a batch. Either way only
        sufficient statistics are kept, never all the points: in cumulative mode
        (``window=None``, the default) the R factor of the augmented design ``[Z | y]``,
        updated by incremental Householder QR; with ``window=W`` the last W raw rows in
        a ring buffer plus a queue of R factors of blocks of them (see `WindowQR`), so
        the fit is exactly the fit on the last W points; with ``forget=lam`` each row
        weighs ``lam`` less per newer row of its stream (``partial_fit(..., stream=p)``),
        and with ``detect`` a drift in the residuals of the model makes every stream
        forget its past (see `regressors.forgetting`). ``fit`` equals ``partial_fit``
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

    def __init__(
        self, *, window: int | None = None, forget: float | None = None, detect: bool = False
    ) -> None:
        self._configure(window, forget, detect)
        self._n_features: int | None = None
        self._stats: CumulativeQR | WindowQR | ForgettingQR | None = None
        self._theta: FloatArray | None = None
        self._trainable = True

    def _configure(self, window: object, forget: object, detect: object) -> None:
        """Check and set how the regressor trains: cumulative, a window, or forgetting."""
        self._window = check_window(window)
        self._forget = check_forget(forget)
        if self._window is not None and self._forget is not None:
            raise ModelError("window and forget exclude each other: give one of them or neither")
        if not isinstance(detect, bool):
            raise ModelError(f"detect: expected True or False, got {detect!r}")
        if detect and self._forget is None:
            raise ModelError("detect needs forget: drift detection runs on forgetting streams")
        self._detect = detect

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

    def params(self) -> dict[str, Any]:
        """Return the constructor's hyper-parameters: ``make_regressor(kind, **params())``.

        ``forget`` and ``detect`` appear only when forgetting is on, so the state of a
        cumulative or windowed regressor reads as it always did.
        """
        params: dict[str, Any] = {"window": self._window}
        if self._forget is not None:
            params.update(forget=self._forget, detect=self._detect)
        return params

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
    def forget(self) -> float | None:
        """Forgetting factor per point of a stream, or None (no forgetting)."""
        return self._forget

    @property
    def drifts(self) -> int:
        """Drifts detected (and reacted to) since the last ``fit``; 0 without ``detect``."""
        return self._stats.drifts if isinstance(self._stats, ForgettingQR) else 0

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
    def effective_points(self) -> float:
        """How many points the current coefficients rest on (0 before any).

        Cumulative: every point seen; window: the points in it; forgetting: the sum
        of the row weights since the last drift (at most ``1 / (1 - forget)`` per
        stream). A fit on fewer points than coefficients interpolates: see
        `MIN_POINTS_PER_PARAM`.
        """
        if isinstance(self._stats, ForgettingQR):
            return self._stats.weight
        return float(self.n_in_window)

    @property
    def is_supported(self) -> bool:
        """True once the fit rests on `MIN_POINTS_PER_PARAM` points per coefficient."""
        n_params = self.n_params
        if n_params is None or not self._trainable:
            return self._theta is not None
        return self.effective_points >= MIN_POINTS_PER_PARAM * n_params

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

    def partial_fit(self, X: ArrayLike, y: ArrayLike, *, stream: int = 0) -> Self:
        """Add a batch of points to the training statistics; return self.

        ``stream`` (a partition, say) matters with forgetting only: rows are forgotten
        by the newer rows of their own stream (see `regressors.forgetting`).
        """
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
            self._add(x, yv, stream)
        return self

    def _start(self, n_features: int) -> None:
        n_params = self._count_params(n_features)
        self._n_features = n_features
        self._theta = None
        self._trainable = True
        if self._forget is not None:
            self._stats = ForgettingQR(
                n_features, n_params, self._expand_into, self._forget, self._detect
            )
        elif self._window is None:
            self._stats = CumulativeQR(n_params, self._expand_into)
        else:
            self._stats = WindowQR(self._window, n_features, n_params, self._expand_into)

    def _add(self, x: FloatArray, y: FloatArray, stream: int = 0) -> None:
        assert self._stats is not None
        if isinstance(self._stats, ForgettingQR):
            self._stats.add(x, y, stream)
        else:
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
    def from_dict(cls, params: Mapping[str, Any]) -> Regressor:
        """Rebuild a model from `to_dict` output, checking every field; raise `ModelError`.

        Called on `Regressor` it dispatches on ``params["kind"]``; called on a subclass
        the kind must be that subclass's. Unknown keys are rejected.
        """
        kind, where = resolve_kind(params, "params", cls._own_kind(), cls._registry)
        if cls is Regressor:
            return cls._registry[kind].from_dict(params)
        return cls._model_from_params(params, where)

    @classmethod
    def _model_from_params(cls, params: Mapping[str, Any], where: str) -> Self:
        """`from_dict` once the kind is this class's."""
        check_keys(params, ("kind", "n_features", *cls.HYPER_KEYS, "intercept", "coef"), where)
        n_features = get_int(params, "n_features", where, minimum=1)
        model: Self = cls._from_hyper(params, where)
        n_params = model._count_params(n_features)
        theta = read_coefficients(params, where, n_params, model._shape_text(n_features))
        model._n_features = n_features
        model._theta = theta
        model._trainable = False
        return model

    @classmethod
    def _own_kind(cls) -> str | None:
        """The kind a message read by this class must name (None: any, for `Regressor`)."""
        return None if cls is Regressor else cls.KIND

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
        state.update(stats_state(self._stats))
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Regressor:
        """Rebuild a trainable regressor from `state_dict` output; raise `ModelError` if bad.

        Fed the same further points, it ends with the same coefficients as a regressor
        that was never interrupted.
        """
        kind, where = resolve_kind(state, "state", cls._own_kind(), cls._registry)
        if cls is Regressor:
            return cls._registry[kind].from_state_dict(state)
        return cls._model_from_state(state, where)

    @classmethod
    def _model_from_state(cls, state: Mapping[str, Any], where: str) -> Self:
        """`from_state_dict` once the kind is this class's."""
        window, forget, detect = read_training_mode(state, cls.HYPER_KEYS, where)
        model: Self = cls._from_hyper(state, where)
        model._configure(window, forget, detect)
        n_seen = get_int(state, "n_seen", where, minimum=0)
        if get_key(state, "n_features", where) is None:
            if n_seen:
                raise ModelError(f"{where}: n_features is null but n_seen is {n_seen}")
            return model
        n_features = get_int(state, "n_features", where, minimum=1)
        model._start(n_features)
        assert model._stats is not None
        load_stats(
            model._stats,
            state,
            where,
            n_seen=n_seen,
            shape_text=model._shape_text(n_features),
            check_rows=model._rows,
        )
        return model
