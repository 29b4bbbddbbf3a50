"""Rolling quality of every live model version, and when to publish it.

The scoreboard remembers the last ``window`` labelled points themselves (features
and label), not only each version's errors on them. A version that arrives is
scored on those points at once (`Scoreboard.backfill`), so every live version has
a score on the same window as the champion's from the start.

The serving choice (`scorer.policy`) uses each model *name*'s window
(`Scoreboard.standing`): the errors each point got from the version of that name
live when it was predicted. It is the same points for every name, and it is out
of sample (a version never predicted points after it was trained on them, unlike
a backfilled window, which holds points the trainer may have fitted: an
over-parametrised version would look better there than it is). A name that
appears while points are remembered starts with its first version's backfill, so
a clearly better new model serves at once, and two identical models never differ.

It also watches each version's residuals on new points for a drift: the absolute
residual over the version's rolling RMSE when the watch started (clipped, as the
trainer does) feeds a `regressors.PageHinkley`; a drift is reported on the
version's next score (``drift``, ``drift_at``, ``drifts``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from bus.messages import Score
from regressors import PageHinkley, RollingMetrics
from scorer.registry import LiveModel

FloatArray = npt.NDArray[np.float64]

#: Scaled residuals are clipped here before the drift test (one outlier weighs little).
CLIP = 3.0

#: Labelled points a version needs in its window before its drift watch starts.
WATCH_AFTER = 30


@dataclass
class _Watch:
    """A version's drift watch: the residual scale it started with, the test, what it found."""

    scale: float
    detector: PageHinkley = field(default_factory=PageHinkley)
    found: bool = False  # since the last publication
    at: int | None = None  # epoch ms of the last drift found


class _Window:
    """The last ``size`` labelled points (features and label), oldest first on read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.x: FloatArray | None = None
        self.y = np.zeros(size)
        self.seen = 0

    def add(self, x: FloatArray, y: FloatArray) -> None:
        if self.x is None or self.x.shape[1] != x.shape[1]:  # a new width starts over
            self.x, self.seen = np.zeros((self.size, x.shape[1])), 0
        keep = min(len(y), self.size)
        slots = np.arange(self.seen + len(y) - keep, self.seen + len(y)) % self.size
        self.x[slots] = x[len(y) - keep :]
        self.y[slots] = y[len(y) - keep :]
        self.seen += len(y)

    def rows(self) -> tuple[FloatArray, FloatArray]:
        if self.x is None:
            return np.zeros((0, 0)), np.zeros(0)
        slots = np.arange(max(0, self.seen - self.size), self.seen) % self.size
        return self.x[slots], self.y[slots]


class Scoreboard:
    """Exact rolling R2 / RMSE / MAE per (model, version) over the last ``window`` labels."""

    def __init__(self, window: int, every: int, interval_s: float, now: float) -> None:
        self.window = window
        self._every = every
        self._interval_s = interval_s
        self._metrics: dict[tuple[str, int], RollingMetrics] = {}
        self._watches: dict[tuple[str, int], _Watch] = {}
        self._names: dict[str, RollingMetrics] = {}
        self._points = _Window(window)
        self._since_publish = 0
        self._published_at = now

    def has(self, model: LiveModel) -> bool:
        """True once ``model`` has a window (scored on points, or backfilled)."""
        return model.key in self._metrics

    def update(
        self, model: LiveModel, y_true: FloatArray, y_pred: FloatArray, now: float | None = None
    ) -> None:
        """Add labelled predictions of ``model`` on new points; watch them for a drift.

        Before any point is remembered, windows are made here; after, a version or a
        name without one gets it from `backfill` (this batch included, once remembered).
        """
        fresh = self._points.seen == 0
        standing = self._names.get(model.name)
        if standing is None and fresh:
            standing = self._names[model.name] = RollingMetrics(self.window)
        if standing is not None:
            standing.update_many(y_true, y_pred)
        metrics = self._metrics.get(model.key)
        if metrics is None and fresh:
            metrics = self._metrics[model.key] = RollingMetrics(self.window)
        if metrics is not None:
            metrics.update_many(y_true, y_pred)
            self._watch(model, metrics, np.abs(y_true - y_pred), now)

    def remember(self, x: FloatArray, y_true: FloatArray) -> None:
        """Keep the labelled points of a batch (the last ``window`` of them are kept)."""
        if len(y_true):
            self._points.add(x, y_true)

    def backfill(self, live: Iterable[LiveModel]) -> list[LiveModel]:
        """Score every live version without a window on the remembered points; return them.

        A name without a window gets a copy of its version's (see the module doc).
        """
        x, y = self._points.rows()
        done = []
        for model in live:
            if model.key in self._metrics or not len(y) or model.n_features != x.shape[1]:
                continue
            predicted = model.predict(x)
            if not np.isfinite(predicted).all():
                continue
            metrics = RollingMetrics(self.window)
            try:
                metrics.update_many(y, predicted)
            except Exception:  # predictions past the metrics' range: left unscored
                continue
            self._metrics[model.key] = metrics
            if model.name not in self._names:
                standing = self._names[model.name] = RollingMetrics(self.window)
                standing.update_many(y, predicted)
            done.append(model)
        return done

    def standing(self, model: LiveModel) -> tuple[int, float | None]:
        """(count, rolling RMSE) of the model's name: what serving is decided on."""
        metrics = self._names.get(model.name)
        return (0, None) if metrics is None else (metrics.count, metrics.rmse)

    def _watch(
        self, model: LiveModel, metrics: RollingMetrics, errors: FloatArray, now: float | None
    ) -> None:
        watch = self._watches.get(model.key)
        if watch is None:
            rmse = metrics.rmse
            if metrics.count < WATCH_AFTER or rmse is None or not rmse > 0.0:
                return
            watch = self._watches[model.key] = _Watch(rmse)
            return  # the points that set the scale are not tested against it
        scaled = np.minimum(errors / watch.scale, CLIP)
        taken = 0
        while taken < len(scaled):
            taken += watch.detector.update_many(scaled[taken:])
            if watch.detector.drift_detected:
                watch.found = True
                watch.at = None if now is None else int(now * 1000)

    def drifts(self, model: LiveModel) -> int:
        """Drifts found in the residuals of ``model`` so far."""
        watch = self._watches.get(model.key)
        return 0 if watch is None else watch.detector.drifts

    def labelled(self, count: int) -> None:
        """Count labelled points towards the next publication."""
        self._since_publish += count

    def noise(self, model: LiveModel) -> float | None:
        """The version's noise level on this stream: its drift watch's scale, else its
        rolling RMSE once scored on `WATCH_AFTER` points (None before)."""
        watch = self._watches.get(model.key)
        if watch is not None:
            return watch.scale
        metrics = self._metrics.get(model.key)
        if metrics is None or metrics.count < WATCH_AFTER:
            return None
        return metrics.rmse

    def rmse(self, model: LiveModel) -> tuple[int, float | None]:
        """(count, rolling RMSE) of a model version; (0, None) before its first label."""
        metrics = self._metrics.get(model.key)
        return (0, None) if metrics is None else (metrics.count, metrics.rmse)

    def retire(self, live: Iterable[LiveModel]) -> None:
        """Drop the windows of versions that are no longer live."""
        models = list(live)
        keep = {model.key for model in models}
        for key in [k for k in self._metrics if k not in keep]:
            del self._metrics[key]
            self._watches.pop(key, None)
        names = {model.name for model in models}
        for name in [n for n in self._names if n not in names]:
            del self._names[name]

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
        scores = []
        for key, metrics in sorted(self._metrics.items()):
            if metrics.count == 0:
                continue
            watch = self._watches.get(key)
            scores.append(
                Score(
                    model=key[0],
                    version=key[1],
                    window=self.window,
                    count=metrics.count,
                    r2=metrics.r2,
                    rmse=metrics.rmse,
                    mae=metrics.mae,
                    ts=ts,
                    drift=bool(watch and watch.found),
                    drift_at=watch.at if watch else None,
                    drifts=watch.detector.drifts if watch else 0,
                )
            )
            if watch is not None:
                watch.found = False
        return scores
