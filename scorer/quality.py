"""Rolling quality of every live model version, and when to publish it."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from bus.messages import Score
from regressors import RollingMetrics
from scorer.registry import LiveModel

FloatArray = npt.NDArray[np.float64]


class Scoreboard:
    """Exact rolling R2 / RMSE / MAE per (model, version) over the last ``window`` labels."""

    def __init__(self, window: int, every: int, interval_s: float, now: float) -> None:
        self.window = window
        self._every = every
        self._interval_s = interval_s
        self._metrics: dict[tuple[str, int], RollingMetrics] = {}
        self._since_publish = 0
        self._published_at = now

    def update(self, model: LiveModel, y_true: FloatArray, y_pred: FloatArray) -> None:
        """Add labelled predictions of ``model``."""
        metrics = self._metrics.get(model.key)
        if metrics is None:
            metrics = self._metrics[model.key] = RollingMetrics(self.window)
        metrics.update_many(y_true, y_pred)

    def labelled(self, count: int) -> None:
        """Count labelled points towards the next publication."""
        self._since_publish += count

    def rmse(self, model: LiveModel) -> tuple[int, float | None]:
        """(count, rolling RMSE) of a model version; (0, None) before its first label."""
        metrics = self._metrics.get(model.key)
        return (0, None) if metrics is None else (metrics.count, metrics.rmse)

    def retire(self, live: Iterable[LiveModel]) -> None:
        """Drop the windows of versions that are no longer live."""
        keep = {model.key for model in live}
        for key in [k for k in self._metrics if k not in keep]:
            del self._metrics[key]

    def due(self, now: float) -> bool:
        """True every ``every`` labelled points, or ``interval_s`` after the last publication."""
        if self._since_publish == 0:
            return False
        return self._since_publish >= self._every or now - self._published_at >= self._interval_s

    def publish(self, now: float) -> list[Score]:
        """The current scores of every scored version; resets the publication counters."""
        self._since_publish = 0
        self._published_at = now
        ts = int(now * 1000)
        return [
            Score(
                model=name,
                version=version,
                window=self.window,
                count=metrics.count,
                r2=metrics.r2,
                rmse=metrics.rmse,
                mae=metrics.mae,
                ts=ts,
            )
            for (name, version), metrics in sorted(self._metrics.items())
            if metrics.count > 0
        ]
