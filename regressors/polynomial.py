"""PolynomialRegressor: least squares on every monomial of the features up to a degree."""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import combinations_with_replacement
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import ArrayLike

from core.errors import ModelError
from regressors.base import (
    MAX_ABS_VALUE,
    MAX_PARAMETERS,
    FloatArray,
    Regressor,
    as_rows,
    get_int,
)

#: Highest polynomial degree accepted.
MAX_DEGREE = 10


def _check_degree(degree: object) -> int:
    if isinstance(degree, bool) or not isinstance(degree, int):
        raise ModelError(f"degree: expected an integer, got {degree!r}")
    if not 1 <= degree <= MAX_DEGREE:
        raise ModelError(f"degree: expected 1 to {MAX_DEGREE}, got {degree}")
    return degree


def n_polynomial_terms(n_features: int, degree: int) -> int:
    """Return how many monomials of degree 0..``degree`` ``n_features`` variables have."""
    return math.comb(n_features + degree, degree)


def polynomial_powers(n_features: int, degree: int) -> list[tuple[int, ...]]:
    """Return the exponents of each column of `polynomial_features`, in column order.

    E.g. 2 features, degree 2: (0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2), i.e.
    1, x0, x1, x0^2, x0 x1, x1^2 -- scikit-learn's PolynomialFeatures(include_bias=True).
    """
    powers = []
    for k in range(degree + 1):
        for combo in combinations_with_replacement(range(n_features), k):
            exponents = [0] * n_features
            for j in combo:
                exponents[j] += 1
            powers.append(tuple(exponents))
    return powers


def _expand(x: FloatArray, degree: int, out: FloatArray) -> None:
    """Write the monomials of ``x`` up to ``degree`` into ``out`` (rows, n_terms).

    Degree-k columns are built from the degree-(k-1) ones: for feature j, the block of
    degree-(k-1) monomials whose lowest feature index is >= j, times x_j. That is the
    lexicographic order of combinations_with_replacement, degree by degree. One numpy
    multiply per (degree, feature): no per-row Python work.
    """
    d = x.shape[1]
    out[:, 0] = 1.0
    out[:, 1 : d + 1] = x
    starts, end = list(range(1, d + 1)), d + 1
    for _ in range(2, degree + 1):
        new_starts = []
        col = end
        for j in range(d):
            new_starts.append(col)
            width = end - starts[j]
            np.multiply(out[:, starts[j] : end], x[:, j : j + 1], out=out[:, col : col + width])
            col += width
        starts, end = new_starts, col


def polynomial_features(X: ArrayLike, degree: int) -> FloatArray:
    """Return every monomial of the columns of ``X`` up to ``degree``, bias column first.

    Same columns in the same order as scikit-learn's
    ``PolynomialFeatures(degree, include_bias=True)``: 1, x0, x1, x0^2, x0 x1, x1^2, ...
    (see `polynomial_powers`). ``X`` is (rows, features); a 1-D ``X`` is one row. The
    result is a new (rows, `n_polynomial_terms`) float64 array; ``X`` is not modified.
    """
    degree = _check_degree(degree)
    x = as_rows(X, None)
    out = np.empty((x.shape[0], n_polynomial_terms(x.shape[1], degree)), order="F")
    _expand(x, degree, out)
    return out


class PolynomialRegressor(Regressor):
    """Fit ``y`` by least squares on all monomials of the features up to ``degree``.

    ``PolynomialRegressor(degree=3)`` (cumulative) or ``PolynomialRegressor(3, window=W)``
    (the last W points). The design is `polynomial_features` (scikit-learn's
    PolynomialFeatures order). Training, stability and rank-deficiency handling are
    described in `Regressor`; ``degree=1`` gives the same model as MultivariateRegressor.

    ``to_dict()`` schema (JSON-safe)::

        {"kind": "polynomial", "n_features": d, "degree": k, "intercept": float,
         "coef": [C(d + k, k) - 1 floats: one per monomial of degree 1..k, in
                  polynomial_powers order without the leading constant]}

    e.g. 2 features at degree 3 have 9 coefficients: x0, x1, x0^2, x0 x1, x1^2, x0^3,
    x0^2 x1, x0 x1^2, x1^3.
    """

    KIND: ClassVar[str] = "polynomial"
    HYPER_KEYS: ClassVar[tuple[str, ...]] = ("degree",)

    def __init__(
        self,
        degree: int = 2,
        *,
        window: int | None = None,
        forget: float | None = None,
        detect: bool = False,
    ) -> None:
        super().__init__(window=window, forget=forget, detect=detect)
        self._degree = _check_degree(degree)

    @property
    def degree(self) -> int:
        """Highest total degree of the monomials."""
        return self._degree

    def params(self) -> dict[str, Any]:
        """Return the constructor's hyper-parameters: ``{"degree": k, "window": W, ...}``."""
        return {"degree": self._degree, **super().params()}

    @classmethod
    def _from_hyper(cls, data: Mapping[str, Any], where: str) -> Self:
        degree = get_int(data, "degree", where, minimum=1)
        if degree > MAX_DEGREE:
            raise ModelError(f"{where}: 'degree' must be <= {MAX_DEGREE}, got {degree}")
        return cls(degree)

    def _count_params(self, n_features: int) -> int:
        n_terms = n_polynomial_terms(n_features, self._degree)
        if n_terms > MAX_PARAMETERS:
            raise ModelError(
                f"polynomial: {n_features} features at degree {self._degree} make {n_terms} "
                f"coefficients, more than the {MAX_PARAMETERS} supported; lower the degree"
            )
        return n_terms

    def _expand_into(self, x: FloatArray, out: FloatArray) -> None:
        _expand(x, self._degree, out)

    def _max_abs_input(self) -> float:
        return float(MAX_ABS_VALUE ** (1.0 / self._degree))

    def _shape_text(self, n_features: int) -> str:
        return f"for {n_features} features at degree {self._degree}"
