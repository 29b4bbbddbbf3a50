"""Regressors with a fit / predict / score contract, and exact rolling metrics. numpy only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import ModelError
from regressors.base import Regressor, r2_score
from regressors.drift import PageHinkley
from regressors.linear import MultivariateRegressor
from regressors.metrics import MetricsSnapshot, RollingMetrics
from regressors.polynomial import (
    PolynomialRegressor,
    n_polynomial_terms,
    polynomial_features,
    polynomial_powers,
)

__all__ = [
    "KINDS",
    "MetricsSnapshot",
    "MultivariateRegressor",
    "PageHinkley",
    "PolynomialRegressor",
    "Regressor",
    "RollingMetrics",
    "make_regressor",
    "n_polynomial_terms",
    "polynomial_features",
    "polynomial_powers",
    "r2_score",
    "regressor_for",
    "regressor_from_dict",
    "regressor_from_state_dict",
]

#: Model kinds, as in ``to_dict()["kind"]``.
KINDS: tuple[str, ...] = (MultivariateRegressor.KIND, PolynomialRegressor.KIND)


def make_regressor(kind: str, **options: Any) -> Regressor:
    """Return a new untrained regressor of ``kind`` ('multivariate' or 'polynomial').

    ``options`` are the constructor's keywords: ``window``, ``forget`` and ``detect`` for
    both, ``degree`` for 'polynomial'. ``make_regressor(r.kind, **r.params())`` makes an
    untrained twin of ``r``.
    """
    classes: dict[str, type[Regressor]] = {
        MultivariateRegressor.KIND: MultivariateRegressor,
        PolynomialRegressor.KIND: PolynomialRegressor,
    }
    if kind not in classes:
        raise ModelError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    try:
        return classes[kind](**options)
    except TypeError as exc:
        raise ModelError(f"{kind}: bad options {sorted(options)}: {exc}") from exc


def regressor_from_dict(params: Mapping[str, Any]) -> Regressor:
    """Return the model described by ``params`` (a `Regressor.to_dict` result); checked."""
    return Regressor.from_dict(params)


def regressor_for(
    params: Mapping[str, Any], *, kind: str, n_features: int, where: str
) -> Regressor:
    """The model of ``params``, checked, and checked to be the ``kind`` and ``n_features``
    its message says (``where`` names the message in errors); raise `ModelError`."""
    regressor = Regressor.from_dict(params)
    if regressor.kind != kind:
        raise ModelError(f"{where}: kind is {kind!r} but params are {regressor.kind!r}")
    if regressor.n_features != n_features:
        raise ModelError(
            f"{where}: n_features is {n_features} but params are for "
            f"{regressor.n_features} features"
        )
    return regressor


def regressor_from_state_dict(state: Mapping[str, Any]) -> Regressor:
    """Return the trainable regressor saved by `Regressor.state_dict`; checked."""
    return Regressor.from_state_dict(state)
