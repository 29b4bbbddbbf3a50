"""The dashboard's views: JSON-ready dicts made from a `Snapshot` (one function per API path).

Each view is a pure function of a snapshot and, where rates are asked for, the
samples in it: the resources serve them as they are under ``/api/``, and the
page and the charts are drawn from them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from monitor.state import (
    GroupSample,
    ScorePoint,
    Serving,
    Snapshot,
    TopicSample,
    VersionRow,
)

Json = dict[str, Any]


def _rate(now: float, before: float, dt: float) -> float | None:
    """Records per second between two samples (None with a single sample)."""
    if dt <= 0:
        return None
    return round(max(0.0, (now - before) / dt), 3)


def groups_view(snap: Snapshot) -> Json:
    """Consumer groups (members, lag and consume rate per topic) and topics (write rate)."""
    groups = []
    for name in sorted(snap.groups):
        samples = snap.groups[name]
        groups.append(_group(samples))
    topics = []
    for name in sorted(snap.topics):
        samples_t = snap.topics[name]
        topics.append(_topic(samples_t))
    return {"groups": groups, "topics": topics}


def _group(samples: Sequence[GroupSample]) -> Json:
    last = samples[-1]
    first = samples[0] if len(samples) > 1 else None
    topics: list[Json] = []
    for topic in sorted(last.committed):
        rate = None
        if first is not None and topic in first.committed:
            rate = _rate(last.committed[topic], first.committed[topic], last.ts - first.ts)
        topics.append(
            {
                "topic": topic,
                "committed": last.committed[topic],
                "lag": last.lag.get(topic),
                "rate": rate,
            }
        )
    lags = [int(t["lag"]) for t in topics if t["lag"] is not None]
    rates = [float(t["rate"]) for t in topics if t["rate"] is not None]
    return {
        "group": last.group,
        "state": last.state,
        "members": list(last.members),
        "topics": topics,
        "lag": sum(lags) if lags else None,
        "rate": round(sum(rates), 3) if rates else None,
    }


def _topic(samples: Sequence[TopicSample]) -> Json:
    last = samples[-1]
    rate = None
    if len(samples) > 1:
        rate = _rate(last.end, samples[0].end, last.ts - samples[0].ts)
    return {"topic": last.topic, "end_offset": last.end, "rate": rate}


def _latest_score(snap: Snapshot, model: str) -> ScorePoint | None:
    """The newest score of any version of ``model``."""
    best: ScorePoint | None = None
    for (name, _), points in snap.scores.items():
        if name == model and points and (best is None or best.ts <= points[-1].ts):
            best = points[-1]
    return best


def serving_reason(snap: Snapshot) -> str:
    """Why the serving model serves, as far as ``scores`` and ``models`` tell; and whether
    its newest prediction was recalibrated."""
    serving = snap.serving
    if serving is None:
        return "no prediction seen yet"
    why = _choice(snap, serving)
    if serving.calibration is None:
        return why
    a, b = serving.calibration
    return (
        f"{why}; recalibrated since its residuals jumped: serving {a:.4g} + {b:.4g} x its "
        "output until another version serves"
    )


def _choice(snap: Snapshot, serving: Serving) -> str:
    """Why ``serving`` was chosen."""
    rolling = {
        name: score.rmse
        for name in snap.versions
        if (score := _latest_score(snap, name)) is not None and score.rmse is not None
    }
    mine = rolling.get(serving.model)
    if mine is not None:
        better = {n: r for n, r in rolling.items() if n != serving.model and r < mine}
        if not better:
            return f"lowest rolling RMSE ({mine:.4g})"
        other, rmse = min(better.items(), key=lambda item: item[1])
        return (
            f"kept: {other} has a lower rolling RMSE ({rmse:.4g} < {mine:.4g}) but not by the "
            "scorer's margin, or the scorer's policy names this model"
        )
    train = {
        name: rows[-1].train_rmse
        for name, rows in snap.versions.items()
        if rows[-1].train_rmse is not None
    }
    if train and min(train, key=lambda n: (train[n], n)) == serving.model:
        return f"lowest training RMSE ({train[serving.model]:.4g}); no rolling score yet"
    return "named by the scorer's policy (no rolling score yet)"


def _version_json(row: VersionRow, snap: Snapshot) -> Json:
    points = snap.scores.get((row.name, row.version), [])
    last = points[-1] if points else None
    return {
        "version": row.version,
        "kind": row.kind,
        "n_features": row.n_features,
        "created_at": row.created_at,
        "trained_on": row.trained_on,
        "train_rmse": row.train_rmse,
        "predictions_seen": snap.served.get((row.name, row.version), 0),
        "score": _score_json(last) if last is not None else None,
    }


def _score_json(point: ScorePoint) -> Json:
    return {
        "ts": point.ts,
        "window": point.window,
        "count": point.count,
        "r2": point.r2,
        "rmse": point.rmse,
        "mae": point.mae,
    }


def models_view(snap: Snapshot) -> Json:
    """Every model with its versions (oldest first), which one serves and why."""
    serving = snap.serving
    models = []
    for name in sorted(snap.versions):
        rows = snap.versions[name]
        drift = snap.drift.get(name)
        models.append(
            {
                "name": name,
                "latest": rows[-1].version,
                "serving": serving is not None and serving.model == name,
                "drift": None
                if drift is None
                else {"count": drift.count, "last_ts": drift.last_ts},
                "versions": [_version_json(row, snap) for row in rows],
            }
        )
    return {
        "loaded": snap.models_loaded,
        "serving": None
        if serving is None
        else {
            "model": serving.model,
            "version": serving.version,
            "ts": serving.ts,
            "why": serving_reason(snap),
            "calibration": None if serving.calibration is None else list(serving.calibration),
        },
        "models": models,
    }


def scores_view(snap: Snapshot) -> Json:
    """Rolling scores over time, one series per model version, and detected drifts."""
    series = []
    drifts: dict[tuple[str, int], int] = {}
    for (model, version), points in sorted(snap.scores.items()):
        series.append(
            {
                "model": model,
                "version": version,
                "points": [{"ts": p.ts, **_metrics(p)} for p in points],
            }
        )
        for p in points:
            if p.drift is not None and p.drift.count > 0:
                key = (model, p.drift.last_ts)
                drifts[key] = max(drifts.get(key, 0), p.drift.count)
    return {
        "series": series,
        "drifts": [
            {"model": model, "ts": ts, "count": count}
            for (model, ts), count in sorted(drifts.items(), key=lambda item: item[0][1])
        ],
        "drift": {
            m: {"count": d.count, "last_ts": d.last_ts} for m, d in sorted(snap.drift.items())
        },
    }


def _metrics(point: ScorePoint) -> Json:
    return {"count": point.count, "r2": point.r2, "rmse": point.rmse, "mae": point.mae}


def deadletters_view(snap: Snapshot) -> Json:
    """The newest dead letters first, with their reason and origin."""
    return {
        "total": snap.deadletters_total,
        "latest": [
            {
                "ts": d.ts,
                "partition": d.partition,
                "offset": d.offset,
                "error": d.error,
                "source": {
                    "topic": d.source_topic,
                    "partition": d.source_partition,
                    "offset": d.source_offset,
                },
                "key": d.key,
                "bytes": d.size,
            }
            for d in snap.deadletters
        ],
    }


def _percentile(ordered: Sequence[int], q: float) -> int:
    """The nearest-rank percentile ``q`` (0-100) of sorted values."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def requests_view(snap: Snapshot) -> Json:
    """Request and reply counts, and reply latency (reply minus request record time)."""
    ordered = sorted(snap.latencies)
    latency: Json | None = None
    if ordered:
        latency = {
            "samples": len(ordered),
            "mean": round(sum(ordered) / len(ordered), 3),
            "p50": _percentile(ordered, 50),
            "p95": _percentile(ordered, 95),
            "p99": _percentile(ordered, 99),
            "max": ordered[-1],
        }
    return {
        "requests": snap.requests,
        "replies": snap.replies,
        "matched": snap.matched,
        "errors": snap.reply_errors,
        "waiting": snap.pending,
        "latency_ms": latency,
    }
