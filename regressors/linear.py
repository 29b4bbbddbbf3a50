"""MultivariateRegressor: linear least squares with intercept over any number of features."""

from __future__ import annotations

from typing import ClassVar

from core.errors import ModelError
from regressors.base import MAX_ABS_VALUE, MAX_PARAMETERS, FloatArray, Regressor


class MultivariateRegressor(Regressor):
    """Fit ``y ≈ intercept + coef · x`` by least squares, in batches or as a stream.

    Construct with ``MultivariateRegressor()`` (cumulative) or
    ``MultivariateRegressor(window=W)`` (the last W points). Training, stability and
    rank-deficiency handling are described in `Regressor`.

    ``to_dict()`` schema (JSON-safe)::

        {"kind": "multivariate", "n_features": d, "intercept": float,
         "coef": [d floats, one per feature, in column order]}
    """

    KIND: ClassVar[str] = "multivariate"

    def _count_params(self, n_features: int) -> int:
        if n_features + 1 > MAX_PARAMETERS:
            raise ModelError(
                f"multivariate: {n_features} features is more than the "
                f"{MAX_PARAMETERS - 1} supported"
            )
        return n_features + 1

    def _expand_into(self, x: FloatArray, out: FloatArray) -> None:
        out[:, 0] = 1.0
        out[:, 1:] = x

    def _max_abs_input(self) -> float:
        return MAX_ABS_VALUE

    def _shape_text(self, n_features: int) -> str:
        return f"for {n_features} features"
