"""The regressors the trainer fits, with the score each earns before it trains.

The training score published with a version is *prequential* (test-then-train):
each batch of labelled points is first predicted by the model as it stands, and
only then fitted. The score covers the points since the previous version, each
judged by a model that had not seen it, so it estimates how the model does on new
data, with no hold-out set. Points that arrive before a model exists are not scored;
when none was scored (a first version), r2, rmse and mae are null.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from regressors import Regressor, make_regressor, regressor_from_state_dict
from regressors.base import MAX_ABS_VALUE
from trainer.config import ModelSpec, Training
from trainer.state import StateError

FloatArray = NDArray[np.float64]


@dataclass
class PrequentialScore:
    """R2, RMSE and MAE of predictions made before training, merged batch by batch.

    The label variance is merged with Chan's parallel formula (no catastrophic
    cancellation for labels far from zero).
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    sse: float = 0.0
    sae: float = 0.0

    def add(self, y: FloatArray, prediction: FloatArray) -> None:
        """Account for one batch of labels and the predictions made for them."""
        k = int(y.shape[0])
        if k == 0:
            return
        error = y - prediction
        batch_mean = float(y.mean())
        centered = y - batch_mean
        batch_m2 = float(centered @ centered)
        total = self.n + k
        delta = batch_mean - self.mean
        self.m2 += batch_m2 + delta * delta * self.n * k / total
        self.mean += delta * k / total
        self.n = total
        self.sse += float(error @ error)
        self.sae += float(np.abs(error).sum())

    def snapshot(self) -> dict[str, float | None]:
        """``{"r2", "rmse", "mae"}``; None where undefined (nothing scored, constant labels)."""
        if self.n == 0:
            return {"r2": None, "rmse": None, "mae": None}
        r2 = 1.0 - self.sse / self.m2 if self.n > 1 and self.m2 > 0.0 else None
        values = {"r2": r2, "rmse": math.sqrt(self.sse / self.n), "mae": self.sae / self.n}
        return {k: v if v is None or math.isfinite(v) else None for k, v in values.items()}


@dataclass
class ModelSlot:
    """One configured model: its regressor, last published version and running score."""

    spec: ModelSpec
    regressor: Regressor
    version: int = 0
    score: PrequentialScore = field(default_factory=PrequentialScore)

    @classmethod
    def fresh(cls, spec: ModelSpec, training: Training | int | None) -> ModelSlot:
        """An untrained regressor as the spec describes (``training``: see `ModelSpec.options`)."""
        return cls(spec, make_regressor(spec.kind, **spec.options(training)))

    @classmethod
    def restore(
        cls, spec: ModelSpec, training: Training | int | None, state: dict[str, Any]
    ) -> ModelSlot:
        """The regressor saved in a checkpoint; StateError if it is not what the spec says."""
        try:
            regressor = regressor_from_state_dict(state)
        except Exception as exc:
            raise StateError(f"model {spec.name!r}: checkpoint state unusable: {exc}") from exc
        wanted = make_regressor(spec.kind, **spec.options(training))
        if regressor.kind != wanted.kind or regressor.params() != wanted.params():
            raise StateError(
                f"model {spec.name!r} was trained as {regressor.kind} {regressor.params()} and is "
                f"now configured as {wanted.kind} {wanted.params()}: give the new model another "
                "name (STREAMSCORE_TRAINER_MODELS=name=kind[:degree]), or start over with "
                "another STREAMSCORE_TRAINER_GROUP"
            )
        return cls(spec, regressor)

    @property
    def max_abs_input(self) -> float:
        """The largest |feature| this model's expansion takes (as regressors define it)."""
        return float(MAX_ABS_VALUE ** (1.0 / (self.spec.degree or 1)))

    @property
    def ready(self) -> bool:
        """True when a version is worth publishing: fitted on enough points for its size.

        A fit must rest on ``MIN_POINTS_PER_PARAM`` points per coefficient
        (`regressors.base`): fewer, and least squares (nearly) interpolates them.
        After a drift the count starts over with the points since.
        """
        return self.regressor.is_fitted and self.regressor.is_supported

    def train(self, x: FloatArray, y: FloatArray, stream: int = 0) -> None:
        """Score the batch with the current model (if any), then fit it.

        ``stream`` is the partition the rows come from (it matters with forgetting).
        """
        if self.regressor.is_fitted:
            self.score.add(y, self.regressor.predict(x))
        self.regressor.partial_fit(x, y, stream=stream)

    def take_score(self) -> dict[str, float | None]:
        """The score since the previous version; starts a new one."""
        snapshot = self.score.snapshot()
        self.score = PrequentialScore()
        return snapshot
