"""``python -m bench learning``: how well the trainer and scorer follow a stream, beside River.

The trainer's and the scorer's logic run in-process, with no broker: the trainer's
model slots (`trainer.models.ModelSlot`, the shipped defaults: forgetting and drift
detection) and publication policy, the scorer's registry, scoreboard and serving
policy and its recalibration after a jump (`scorer.calibration`). Points come in
batches; each batch is first predicted by the serving model (the prequential
error: test, then train; within a batch the recalibration learns from each
labelled point before the next, as the scorer does), then scored for every live
version, then trained on; versions are published when the policy says so, are
scored on the remembered window at once, and serve from the next batch. River's
online regressors (``StandardScaler | LinearRegression`` and the same after a
``PolynomialExtender``) learn the same points one at a time, predicting each
before learning it. Errors are compared on the points the pipeline predicted (it
holds the stream until a first version).

Streams: the dummy source with an abrupt drift half way (`producer.sources`), the
same cubic with a change of shape half way (no target: what recalibration cannot
follow), and River's bundled ``TrumpApproval`` data set (1,001 points, 6 features).
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.config import BenchConfig
from bench.context import BenchContext
from bench.report import BenchResult
from regressors import regressor_from_dict
from scorer.calibration import Calibration, calibrate
from scorer.policy import ServingPolicy
from scorer.quality import Scoreboard
from scorer.registry import LiveModel, ModelRegistry
from trainer.config import TrainerConfig
from trainer.models import ModelSlot
from trainer.publish import PublishPolicy

FloatArray = npt.NDArray[np.float64]
BARS = "▁▂▃▄▅▆▇█"
#: Smaller batches the drifting stream is run in too (the headline run uses 100).
SWEEP = (50, 20, 10)


@dataclass
class Outcome:
    """What one run of the pipeline saw: per point, its prediction and what served it."""

    predictions: FloatArray
    served: list[str]
    rolling: list[tuple[int, float]] = field(default_factory=list)  # (point, serving RMSE)
    switches: list[tuple[int, str]] = field(default_factory=list)  # (point, model)
    versions: int = 0
    drifts: list[int] = field(default_factory=list)  # points at which the trainer found one


def run_pipeline(
    x: FloatArray, y: FloatArray, *, batch: int = 100, publish_every: int = 1000, window: int = 1000
) -> Outcome:
    """The trainer and scorer logic over ``(x, y)`` in batches; NaN where the scorer held."""
    config = TrainerConfig()
    slots = [ModelSlot.fresh(spec, config.training) for spec in config.models]
    publish = PublishPolicy(publish_every, interval_s=math.inf)
    registry = ModelRegistry()
    board = Scoreboard(window, every=10**9, interval_s=math.inf, now=0.0)
    policy = ServingPolicy()
    out = Outcome(np.full(len(y), np.nan), [""] * len(y))
    champion = None
    calibration = Calibration()
    for start in range(0, len(y), batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        live = registry.latest()
        serving = policy.serving(live)
        if serving is not None:
            served = serving.predict(xb)
            calibrated = calibrate(calibration, serving.key, served, yb, board.noise(serving))
            calibration = calibration.then(calibration, calibrated)
            out.predictions[start : start + len(yb)] = calibrated.values
            out.served[start : start + len(yb)] = [serving.name] * len(yb)
            for model in live.values():
                pred = served if model is serving else model.predict(xb)
                board.update(model, yb, pred, float(start))
            board.remember(xb, yb)
            board.backfill(live.values())
            policy.review(live, board)
            now_serving = policy.serving(live)
            if now_serving is not None:
                out.rolling.append((start + len(yb), board.rmse(now_serving)[1] or math.nan))
                if now_serving.name != champion:
                    champion = now_serving.name
                    out.switches.append((start + len(yb), champion))
        drifts = sum(slot.regressor.drifts for slot in slots)
        for slot in slots:
            slot.train(xb, yb)
        if sum(slot.regressor.drifts for slot in slots) > drifts:
            out.drifts.append(start + len(yb))
            publish.drift()
        publish.note(points=len(yb), deadletters=0, consumed=True, now=0.0)
        if publish.due(0.0):
            _publish(slots, registry, board)
            out.versions += 1
            publish.published()
            board.backfill(registry.latest().values())  # as the scorer, the moment they arrive
            policy.review(registry.latest(), board)
    return out


def false_jumps(
    outputs: FloatArray, labels: FloatArray, every: int = 5_000
) -> tuple[int, float, float]:
    """The recalibration alone over a stationary stream served by ``outputs``, a new
    version every ``every`` points: (jumps found, served RMSE, the versions' own RMSE)."""
    n = len(labels)
    sigma = rmse(labels[:1000], outputs[:1000])
    state, jumps, served = Calibration(), 0, np.empty(n)
    for start in range(0, n, 100):
        end, key = start + 100, ("m", 1 + start // every)
        done = calibrate(state, key, outputs[start:end], labels[start:end], sigma)
        state, jumps = state.then(state, done), jumps + done.jumped
        served[start:end] = done.values
    return jumps, rmse(labels, served), rmse(labels, outputs)


def heavy_tailed(n: int = 200_000, seed: int = 5) -> tuple[FloatArray, FloatArray]:
    """(a version's outputs, labels) with Student t noise of 2 degrees of freedom
    (infinite variance) around them."""
    rng = np.random.default_rng(seed)
    outputs = rng.uniform(-3, 3, n) ** 3
    return outputs, outputs + 0.1 * rng.standard_t(2, n)


def poorly_fitted(n: int = 400_000) -> tuple[FloatArray, FloatArray]:
    """(outputs, labels): the producer's default stream (the dummy cubic of 3 features,
    noise 0.5), stationary, served by a straight line fitted to it: its errors are
    large and heavy-tailed, not a change."""
    from producer.config import ProducerConfig
    from producer.sources import DummySource

    default = ProducerConfig()
    source = DummySource(default.function, default.features, noise=default.noise, seed=3)
    rows = _take(iter(source), n)
    x = np.array([p.x for p in rows], dtype=np.float64)
    y = np.array([p.y for p in rows], dtype=np.float64)
    design = np.column_stack([np.ones(n), x])
    coef, *_ = np.linalg.lstsq(design[:2000], y[:2000], rcond=None)
    return design @ coef, y


def _publish(slots: list[ModelSlot], registry: ModelRegistry, board: Scoreboard) -> None:
    for slot in slots:
        if not slot.ready:  # as the trainer: no version on too few points for its size
            continue
        regressor = slot.regressor
        current = registry.get(slot.spec.name)
        score = slot.take_score()
        model = LiveModel(
            name=slot.spec.name,
            version=(current.version + 1) if current else 1,
            kind=regressor.kind,
            n_features=int(regressor.n_features or 0),
            train_rmse=score["rmse"],
            regressor=regressor_from_dict(regressor.to_dict()),
            trained_count=regressor.n_seen,
        )
        registry.add(model)
    board.retire(registry.latest().values())


def river_module() -> Any:
    """River, a bench-only dependency (the `bench` extra), imported by name: untyped here."""
    river = importlib.import_module("river")
    for part in ("datasets", "feature_extraction", "linear_model", "preprocessing"):
        importlib.import_module(f"river.{part}")
    return river


def run_river(x: FloatArray, y: FloatArray, degree: int) -> FloatArray:
    """Prequential predictions of River's linear regression (after a polynomial extender)."""
    river = river_module()
    model: Any = river.preprocessing.StandardScaler() | river.linear_model.LinearRegression()
    if degree > 1:
        model = river.feature_extraction.PolynomialExtender(degree=degree) | model
    names = [f"x{j}" for j in range(x.shape[1])]
    out = np.empty(len(y))
    for i, (row, target) in enumerate(zip(x.tolist(), y.tolist(), strict=True)):
        features = dict(zip(names, row, strict=True))
        out[i] = model.predict_one(features)
        model.learn_one(features, target)
    return out


def rmse(y: FloatArray, predicted: FloatArray) -> float:
    """Root mean squared error (NaN-free inputs)."""
    return float(np.sqrt(np.mean((y - predicted) ** 2)))


def sparkline(values: Iterable[float], width: int = 60, top: float | None = None) -> str:
    """A line of unicode blocks for ``values`` (averaged into ``width`` cells)."""
    data = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    if not data.size:
        return ""
    cells = [float(c.mean()) for c in np.array_split(data, min(width, data.size))]
    high = top or max(cells) or 1.0
    return "".join(BARS[min(len(BARS) - 1, int(c / high * (len(BARS) - 1) + 0.5))] for c in cells)


def drifting_stream(n: int, seed: int = 7) -> tuple[FloatArray, FloatArray]:
    """``n`` points of the dummy source (cubic, 2 features) that drifts at ``n // 2``."""
    from producer.sources import DummySource

    rows = _take(iter(DummySource("cubic", 2, noise=0.1, seed=seed, drift_after=n // 2)), n)
    x = np.array([p.x for p in rows], dtype=np.float64)
    y = np.array([p.y for p in rows], dtype=np.float64)
    return x, y


def _take(points: Iterator[Any], n: int) -> list[Any]:
    return [next(points) for _ in range(n)]


def mirrored_stream(n: int, seed: int = 7) -> tuple[FloatArray, FloatArray]:
    """The dummy cubic with the first feature mirrored after ``n // 2``: a change of
    shape, which no ``a + b * output`` of the old fit follows (noise 0.1)."""
    from producer.sources import make_target

    x, _ = drifting_stream(n, seed)
    turned = x.copy()
    turned[n // 2 :, 0] *= -1.0
    noise = np.random.default_rng(seed + 1).normal(0.0, 0.1, n)
    return x, make_target("cubic", 2).batch(turned) + noise


def trump_approval() -> tuple[FloatArray, FloatArray]:
    """River's TrumpApproval data set as arrays (features in the data set's order)."""
    rows = list(river_module().datasets.TrumpApproval())
    x = np.array([list(features.values()) for features, _ in rows], dtype=np.float64)
    return x, np.array([target for _, target in rows], dtype=np.float64)


def recovery(outcome: Outcome, drift_at: int, window: int) -> tuple[float, float, int | None]:
    """(pre-drift rolling RMSE, worst after, points after the drift until within 1.2x)."""
    before = [r for point, r in outcome.rolling if drift_at - window <= point <= drift_at]
    level = before[-1] if before else math.nan
    after = [(point, r) for point, r in outcome.rolling if point > drift_at]
    worst = max((r for _, r in after), default=math.nan)
    peaked = False
    for point, r in after:
        peaked = peaked or r > 1.2 * level
        if peaked and r <= 1.2 * level:
            return level, worst, point - drift_at
    return level, worst, None if peaked else 0


def served_recovery(
    outcome: Outcome, y: FloatArray, drift_at: int, batch: int
) -> tuple[float, int | None, float]:
    """The served error batch by batch: (RMSE of the batch before the drift, points after
    the drift until a batch is back within 1.2x of it, the RMSE over the whole stream
    of the first batch after the drift alone: what no model served before its labels
    can avoid)."""
    errors = (outcome.predictions - y) ** 2
    level = float(np.sqrt(np.nanmean(errors[drift_at - batch : drift_at])))
    back = None
    for start in range(drift_at, len(y), batch):
        if float(np.sqrt(np.nanmean(errors[start : start + batch]))) <= 1.2 * level:
            back = start + batch - drift_at
            break
    scored = int(np.count_nonzero(~np.isnan(errors)))
    floor = float(np.sqrt(np.nansum(errors[drift_at : drift_at + batch]) / scored))
    return level, back, floor


def compare(
    result: BenchResult,
    case: str,
    x: FloatArray,
    y: FloatArray,
    target: str | None = None,
    **pipeline: int,
) -> Outcome:
    """Run the pipeline and both River regressors on one stream; add the rows."""
    began = time.monotonic()
    outcome = run_pipeline(x, y, **pipeline)
    ours_s = time.monotonic() - began
    mask = ~np.isnan(outcome.predictions)
    ours = rmse(y[mask], outcome.predictions[mask])
    river = {}
    for degree, label in ((1, "River linear"), (3, "River poly3")):
        began = time.monotonic()
        predicted = run_river(x, y, degree)
        river[label] = rmse(y[mask], predicted[mask])
        result.data.setdefault("river_predictions", {})[(case, label)] = predicted
        print(f"  {case}: {label} RMSE {river[label]:.4f} ({time.monotonic() - began:.1f} s)")
    best = min(river.values())
    print(f"  {case}: streamscore RMSE {ours:.4f} ({ours_s:.1f} s), {mask.sum()} points scored")
    result.add(case, "prequential RMSE, streamscore", ours)
    for label, value in river.items():
        result.add(case, f"prequential RMSE, {label}", value)
    result.add(case, "streamscore / River's best", ours / best, "x", target=target or "")
    result.data[case] = {"streamscore": ours, **river, "scored": int(mask.sum())}
    return outcome


def batch_sweep(
    result: BenchResult, case: str, x: FloatArray, y: FloatArray, batches: Iterable[int]
) -> None:
    """The same stream in smaller batches: how the ratio to River depends on the batch.

    A scorer's batch is what one poll returns, and a new version serves from the
    batch after the one that revealed the drift: at a given rate, the batch is the
    rate times the turnaround from points to a served version. River's errors are
    taken on the same points as ours in each run.
    """
    predictions: dict[tuple[str, str], FloatArray] = result.data["river_predictions"]
    for batch in batches:
        outcome = run_pipeline(x, y, batch=batch)
        mask = ~np.isnan(outcome.predictions)
        ours = rmse(y[mask], outcome.predictions[mask])
        best = min(rmse(y[mask], p[mask]) for (c, _), p in predictions.items() if c == case)
        print(f"  {case}, batches of {batch}: streamscore RMSE {ours:.4f}, River's best {best:.4f}")
        result.add(
            case,
            f"streamscore / River's best, batches of {batch}",
            ours / best,
            "x",
            note=f"RMSE {ours:.3f} vs {best:.3f}",
        )


def run(ctx: BenchContext, config: BenchConfig) -> BenchResult:
    """Both streams; the drift's recovery and a chart of the serving model's rolling RMSE."""
    del ctx, config
    result = BenchResult("9. learning")
    n = 20_000
    x, y = drifting_stream(n)
    outcome = compare(result, "dummy cubic, drift at 10000", x, y, "<= 0.8", window=1000)
    level, worst, back = recovery(outcome, n // 2, 1000)
    result.add("dummy cubic, drift at 10000", "rolling RMSE before the drift", level)
    result.add("dummy cubic, drift at 10000", "worst rolling RMSE after", worst)
    result.add(
        "dummy cubic, drift at 10000",
        "points until rolling RMSE <= 1.2x before",
        None if back is None else float(back),
        "points",
        target="<= 2000",
    )
    level, back, floor = served_recovery(outcome, y, n // 2, 100)
    case = "dummy cubic, drift at 10000"
    result.add(case, "served RMSE, the batch of 100 before the drift", level)
    result.add(
        case,
        "points until a served batch's RMSE <= 1.2x before",
        None if back is None else float(back),
        "points",
        target="<= 2000",
    )
    result.add(case, "prequential RMSE of the first batch after the drift alone", floor)
    print("  serving rolling RMSE:", sparkline(r for _, r in outcome.rolling))
    print("  switches:", ", ".join(f"{model} at {point}" for point, model in outcome.switches))
    batch_sweep(result, case, x, y, SWEEP)
    for case, (outputs, labels) in (
        ("stationary, Student t(2) noise, 200,000 points", heavy_tailed()),
        ("default stream served by a straight line, 400,000 points", poorly_fitted()),
    ):
        jumps, served, own = false_jumps(outputs, labels)
        result.add(case, "jumps the recalibration found (false alarms)", float(jumps), "jumps")
        note = f"{served:.4f} vs {own:.4f}"
        result.add(case, "served RMSE / the versions' own", served / own, "x", note=note)
    xm, ym = mirrored_stream(n)
    compare(result, "dummy cubic, x0 mirrored at 10000 (no target)", xm, ym, window=1000)
    xt, yt = trump_approval()
    compare(result, "River TrumpApproval", xt, yt, "<= 1.0", batch=10, publish_every=50, window=100)
    result.data.pop("river_predictions")
    return result
