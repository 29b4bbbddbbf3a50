"""The scorer's step: a batch of ``points`` in; predictions, due scores and dead letters out.

The stream kernel (`bus.stream`) runs it: it polls, sends what `process` returns,
commits, and only then calls `committed`, where the rolling scores learn from the
batch's labels (a batch redone after a fault is not counted twice). `process`
changes no lasting state, so the kernel can redo a batch, or one record at a time.

The serving version's output is recalibrated point by point after its residuals
jump (`scorer.calibration`), each partition of points on its own: a partition
holds its points in time order, while across partitions one may already hold a
new regime and another still the old. What a batch learnt of it is kept at
`committed` too. Rolling scores are always of the versions' own outputs.

While no model serves, `tick` holds the input: points are not even polled, the
stream waits, and scoring starts at the first unscored point.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from bus.clients.base import Record, TopicPartition, TransientBusError
from bus.codec import PointColumns, decode_points, encode_predictions
from bus.stream import Outcome, Step
from bus.topics import Topics
from core.errors import ModelError
from scorer.calibration import Calibrated, Calibration, calibrate
from scorer.models_feed import ModelFeed
from scorer.policy import ServingPolicy
from scorer.quality import Scoreboard
from scorer.registry import FloatArray, LiveModel, ModelRegistry

log = logging.getLogger(__name__)

# (serving model, features, labels, its predictions) for the labelled points of a batch
Labelled = tuple[LiveModel, FloatArray, FloatArray, FloatArray]
T = TypeVar("T")


@dataclass
class ScoringStats:
    """What the step has had committed."""

    points: int = 0
    predictions: int = 0
    deadletters: int = 0
    #: predictions per serving model's name (the version is not a key: it never stops growing)
    model_predictions: dict[str, int] = field(default_factory=dict)
    #: predictions served recalibrated, and jumps that started a recalibration
    calibrated: int = 0
    jumps: int = 0


@dataclass(slots=True)
class _Done:
    """What `committed` needs of an outcome."""

    points: int
    predictions: int
    deadletters: int
    labelled: Labelled | None
    model: str | None = None  # the serving model's name
    #: per partition: the recalibration state the batch started from, what it made of it
    calibration: list[tuple[int, Calibration, Calibrated]] = field(default_factory=list)


class ScoringStep(Step):
    """Predicts every valid point with the serving model; publishes rolling scores when due."""

    def __init__(
        self,
        topics: Topics,
        *,
        registry: ModelRegistry,
        policy: ServingPolicy,
        board: Scoreboard,
        feed: ModelFeed,
        prediction_partitions: int,
        model_poll_interval_s: float = 0.05,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        recalibrate: bool = True,
    ) -> None:
        self._topics = topics
        self.registry = registry
        self.policy = policy
        self.board = board
        self._feed = feed
        self._partitions = prediction_partitions
        self._model_poll_interval_s = model_poll_interval_s
        self._clock = clock
        self._monotonic = monotonic
        self._next_models = 0.0
        self._recalibrate = recalibrate
        #: where the serving version's recalibration stands after the committed batches,
        #: per partition of points
        self.calibration: dict[int, Calibration] = {}
        self.stats = ScoringStats()

    def serving(self) -> LiveModel | None:
        """The model answering right now (None while holding)."""
        return self.policy.serving(self.registry.latest())

    # --- kernel hooks ------------------------------------------------------------------

    def tick(self) -> bool:
        """Load new model versions now and then; hold the input while no model serves.

        A version that arrives is scored at once on the last labelled points, and may
        serve from the next batch on (`Scoreboard.backfill`).
        """
        now = self._monotonic()
        if now >= self._next_models:
            if self._feed.poll(0):
                self._judge()
            self._next_models = now + self._model_poll_interval_s
        if self.serving() is None:
            self._feed.poll(0.5)  # hold: wait for a model, do not touch points
            return self.serving() is not None
        return True

    def process(self, records: list[Record]) -> Outcome:
        """Predictions for the valid points, dead letters for the others, scores when due."""
        model = self.serving()
        if model is None:  # the models topic lost its last model between tick and here
            raise TransientBusError("no model serves any more: holding the stream")
        columns = decode_points([r.value for r in records])
        outcome = Outcome()
        for i, reason in columns.invalid:
            outcome.deadletters.append((records[i], reason))
        done = _Done(len(records), 0, 0, None, model.name)
        if columns.index:
            self._predict(records, columns, model, outcome, done)
        self._add_scores(outcome)
        done.deadletters = len(outcome.deadletters)
        outcome.context = done
        return outcome

    def idle(self) -> Outcome | None:
        """Scores due on the timer while no point arrives."""
        outcome = Outcome()
        self._add_scores(outcome)
        if not outcome.outputs:
            return None
        outcome.context = _Done(0, 0, 0, None)
        return outcome

    def committed(self, outcome: Outcome) -> None:
        """Count the batch and let the rolling scores learn its labels."""
        done = outcome.context
        if not isinstance(done, _Done):  # the kernel's own outcome of dead letters
            self.stats.deadletters += len(outcome.deadletters)
            return
        self.stats.points += done.points
        self.stats.predictions += done.predictions
        self.stats.deadletters += done.deadletters
        if done.model is not None and done.predictions:
            by_model = self.stats.model_predictions
            by_model[done.model] = by_model.get(done.model, 0) + done.predictions
        for partition, base, batch in done.calibration:
            self._recalibrated(partition, base, batch)
        self._learn(done.labelled)

    def revoked(self, partitions: list[TopicPartition]) -> None:
        """Forget the recalibration of partitions another scorer takes over."""
        for tp in partitions:
            self.calibration.pop(tp.partition, None)

    def _recalibrated(self, partition: int, base: Calibration, batch: Calibrated) -> None:
        """Keep what a committed batch learnt of a partition's recalibration."""
        now = self.calibration.get(partition, Calibration())
        self.calibration[partition] = now.then(base, batch)
        if batch.coefficients is not None:
            self.stats.calibrated += int(np.count_nonzero(np.isfinite(batch.coefficients[:, 0])))
        if batch.jumped:
            self.stats.jumps += 1
            name, version = batch.state.key or ("?", 0)
            log.warning(
                "%s v%d: its residuals jumped on partition %d (the stream changed?): serving "
                "a + b * its output there, fitted on each labelled point since, until "
                "another version serves",
                name,
                version,
                partition,
            )

    # --- the work ----------------------------------------------------------------------

    def _predict(
        self,
        records: list[Record],
        columns: PointColumns,
        model: LiveModel,
        outcome: Outcome,
        done: _Done,
    ) -> None:
        """Predict the valid points (of the model's width); add outputs and dead letters."""
        keep = self._fitting(records, columns, model, outcome)
        if not keep:
            return
        x = np.array(_pick(columns.x, keep, len(columns)), dtype=np.float64)
        values = model.predict(x)
        finite = np.isfinite(values)
        if not finite.all():
            reason = (
                f"the prediction is not a finite number (model {model.name!r} v{model.version})"
            )
            for k in np.flatnonzero(~finite).tolist():
                outcome.deadletters.append((records[columns.index[keep[k]]], reason))
            good = np.flatnonzero(finite)
            keep, x, values = [keep[k] for k in good.tolist()], x[good], values[good]
            if not keep:
                return
        n = len(columns)
        sources = [records[i] for i in _pick(columns.index, keep, n)]
        ys = _pick(columns.y, keep, n)
        labels = _labels(ys)
        served, calibrations = values, None
        if self._recalibrate:
            origins = np.fromiter((r.partition for r in sources), np.int64, len(sources))
            served, calibrations = self._calibrated(model, origins, values, labels, done)
        stamps = [
            r.timestamp if t is None else t
            for r, t in zip(sources, _pick(columns.ts, keep, n), strict=True)
        ]
        encoded = encode_predictions(
            _pick(columns.ids, keep, n),
            served.tolist(),
            ys,
            stamps,
            model=model.name,
            version=model.version,
            calibrations=calibrations,
        )
        partitions = self._partitions
        outcome.add(
            self._topics.predictions,
            encoded,  # type: ignore[arg-type]
            [r.key for r in sources],
            [None if r.key is not None else r.partition % partitions for r in sources],
        )
        done.predictions = len(encoded)
        done.labelled = _labelled(model, x, labels, values)

    def _calibrated(
        self,
        model: LiveModel,
        partitions: npt.NDArray[np.int64],
        values: FloatArray,
        labels: FloatArray,
        done: _Done,
    ) -> tuple[FloatArray, list[tuple[float, float] | None] | None]:
        """The values to serve, each partition recalibrated on its own; ``calibration``
        fields (None when no point is recalibrated)."""
        sigma = self.board.noise(model)
        served, coefficients = values, None
        split = partitions.size and partitions.min() != partitions.max()
        for partition in np.unique(partitions).tolist() if split else [int(partitions[0])]:
            at = np.flatnonzero(partitions == partition) if split else slice(None)
            base = self.calibration.get(partition, Calibration())
            batch = calibrate(base, model.key, values[at], labels[at], sigma)
            done.calibration.append((partition, base, batch))
            if batch.coefficients is None:
                continue
            if coefficients is None:
                served, coefficients = values.copy(), np.full((values.size, 2), math.nan)
            served[at], coefficients[at] = batch.values, batch.coefficients
        if coefficients is None:
            return served, None
        return served, [None if math.isnan(a) else (a, b) for a, b in coefficients.tolist()]

    def _fitting(
        self, records: list[Record], columns: PointColumns, model: LiveModel, outcome: Outcome
    ) -> list[int]:
        """Positions (in ``columns``) of the points with the model's feature count."""
        width = model.n_features
        if set(map(len, columns.x)) == {width}:
            return list(range(len(columns)))
        keep: list[int] = []
        for k, row in enumerate(columns.x):
            if len(row) == width:
                keep.append(k)
            else:
                reason = (
                    f"expected {width} features, got {len(row)} "
                    f"(model {model.name!r} v{model.version})"
                )
                outcome.deadletters.append((records[columns.index[k]], reason))
        return keep

    def _add_scores(self, outcome: Outcome) -> None:
        now = self._clock()
        if not self.board.due(now):
            return
        scores = self.board.publish(now)
        if scores:
            outcome.add(
                self._topics.scores,
                [s.to_bytes() for s in scores],
                [s.model.encode() for s in scores],
            )

    def _learn(self, labelled: Labelled | None) -> None:
        """Update rolling scores (after the commit, so a redone batch is not counted twice).

        Every live version is scored on the batch's labelled points (the serving one
        with the predictions sent); one without a window yet is then backfilled.
        """
        live = self.registry.latest()
        self.board.retire(live.values())
        if labelled is not None:
            serving, x, y_true, served = labelled
            self.board.labelled(len(y_true))
            now = self._clock()
            for model in live.values():
                if model.n_features != x.shape[1]:
                    continue
                y_pred = served if model is serving else model.predict(x)
                if not np.isfinite(y_pred).all():
                    continue
                try:
                    self.board.update(model, y_true, y_pred, now)
                except ModelError as exc:  # predictions past the metrics' range: not scored
                    log.debug(
                        "not scoring %s v%d on this batch: %s", model.name, model.version, exc
                    )
            self.board.remember(x, y_true)
        self._judge()

    def _judge(self) -> None:
        """Score new versions on the remembered window, then reconsider the champion."""
        live = self.registry.latest()
        self.board.retire(live.values())
        for model in self.board.backfill(live.values()):
            count, rmse = self.board.rmse(model)
            log.debug("%s v%d scored on the last %d points: RMSE %s", *model.key, count, rmse)
        self.policy.review(live, self.board)


def _labels(ys: list[float | None]) -> FloatArray:
    """The labels as an array, NaN where a point has none (a label is always finite)."""
    if None not in ys:
        return np.asarray(ys, dtype=np.float64)
    return np.array([math.nan if y is None else y for y in ys], dtype=np.float64)


def _labelled(
    serving: LiveModel, x: FloatArray, labels: FloatArray, values: FloatArray
) -> Labelled | None:
    """(serving model, x, y, its own outputs) for the labelled points; None if none."""
    known = np.isfinite(labels)
    if known.all():
        return serving, x, labels, values
    if not known.any():
        return None
    return serving, x[known], labels[known], values[known]


def _pick(column: list[T], keep: list[int], size: int) -> list[T]:
    """The items of ``column`` at ``keep`` (the column itself when nothing was left out)."""
    return column if len(keep) == size else [column[k] for k in keep]
