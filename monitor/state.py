"""What the dashboard knows: plain, thread-safe, in-memory state that the feed fills.

`Dashboard` takes records of ``models``, ``scores``, ``predictions``,
``deadletter``, ``requests`` and ``replies`` (already decoded where the contract
says how) and consumer-group samples; the views (`monitor.views`) read snapshots
of it. Nothing here talks to Kafka, so every view can be tested with data made
in memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bus.messages import ModelVersion, Score

#: Most model versions kept per model.
MAX_VERSIONS = 1000
#: Most request ids waiting for their reply (the oldest are forgotten first).
MAX_PENDING = 20_000
#: How many request latencies the latency figures are taken over.
LATENCY_WINDOW = 1000


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One model version as published on ``models``."""

    name: str
    version: int
    kind: str
    n_features: int
    created_at: int
    trained_on: int
    train_rmse: float | None

    @classmethod
    def of(cls, model: ModelVersion) -> VersionRow:
        """The metadata the dashboard shows of ``model``."""
        count = model.trained_on.get("count")
        return cls(
            name=model.name,
            version=model.version,
            kind=model.kind,
            n_features=model.n_features,
            created_at=model.created_at,
            trained_on=count if isinstance(count, int) else 0,
            train_rmse=model.train_score.get("rmse"),
        )


@dataclass(frozen=True, slots=True)
class Drift:
    """The drift detector's running figures for one model (optional on ``scores``)."""

    count: int
    last_ts: int

    @classmethod
    def parse(cls, score: Mapping[str, Any]) -> Drift | None:
        """The drift figures of a ``scores`` object, or None when absent or malformed.

        The contract's optional fields: ``"drifts"`` (how many so far) and ``"drift_at"``
        (epoch ms of the last one), written once a drift has been found.
        """
        count, last_ts = score.get("drifts"), score.get("drift_at")
        if type(count) is not int or type(last_ts) is not int or count < 0:
            return None
        return cls(count, last_ts)


@dataclass(frozen=True, slots=True)
class ScorePoint:
    """One ``scores`` record: a model version's rolling quality at one time."""

    model: str
    version: int
    ts: int
    window: int
    count: int
    r2: float | None
    rmse: float | None
    mae: float | None
    drift: Drift | None = None

    @classmethod
    def of(cls, score: Score, drift: Drift | None = None) -> ScorePoint:
        """The point of ``score``."""
        return cls(
            score.model,
            score.version,
            score.ts,
            score.window,
            score.count,
            score.r2,
            score.rmse,
            score.mae,
            drift,
        )


@dataclass(frozen=True, slots=True)
class Serving:
    """The model version the newest prediction was made with."""

    model: str
    version: int
    ts: int
    #: ``(a, b)`` when the prediction was ``a + b * output`` (recalibrated after a jump)
    calibration: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter: where it was, why, and where it came from."""

    partition: int
    offset: int
    ts: int
    error: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    key: str | None
    size: int


@dataclass(frozen=True, slots=True)
class GroupSample:
    """One consumer group at one time: its members and committed offsets per topic."""

    group: str
    state: str
    members: tuple[str, ...]
    committed: Mapping[str, int]  # topic -> sum of committed offsets
    lag: Mapping[str, int]  # topic -> records not yet consumed
    ts: float


@dataclass(frozen=True, slots=True)
class TopicSample:
    """One topic at one time: the sum of its end offsets."""

    topic: str
    end: int
    ts: float


@dataclass
class RequestStats:
    """Counts of requests and replies, and the latencies of the matched ones (ms)."""

    requests: int = 0
    replies: int = 0
    matched: int = 0
    errors: int = 0
    latencies: deque[int] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    pending: OrderedDict[str, int] = field(default_factory=OrderedDict)
    early: OrderedDict[str, int] = field(default_factory=OrderedDict)


class Dashboard:
    """Thread-safe state of the dashboard (fed by `monitor.feed.Feed`)."""

    def __init__(self, *, history: int = 500, deadletters: int = 50) -> None:
        self._lock = threading.Lock()
        self._history = history
        self._versions: dict[str, dict[int, VersionRow]] = {}
        self._scores: dict[tuple[str, int], deque[ScorePoint]] = {}
        self._drift: dict[str, Drift] = {}
        self._serving: Serving | None = None
        self._served: dict[tuple[str, int], int] = {}
        self._dead: deque[DeadLetter] = deque(maxlen=deadletters)
        self._dead_total = 0
        self._requests = RequestStats()
        self._groups: dict[str, deque[GroupSample]] = {}
        self._topics: dict[str, deque[TopicSample]] = {}
        self._models_loaded = False

    # --- writing -------------------------------------------------------------------

    def add_model(self, model: ModelVersion) -> None:
        """Remember a model version."""
        with self._lock:
            versions = self._versions.setdefault(model.name, {})
            versions[model.version] = VersionRow.of(model)
            while len(versions) > MAX_VERSIONS:
                del versions[min(versions)]

    def remove_model(self, name: str) -> None:
        """Forget a model (a tombstone on ``models``)."""
        with self._lock:
            self._versions.pop(name, None)

    def models_loaded(self) -> None:
        """Say that ``models`` was read up to where it ended at start."""
        with self._lock:
            self._models_loaded = True

    def add_score(self, point: ScorePoint) -> None:
        """Add one rolling score to its version's history."""
        with self._lock:
            key = (point.model, point.version)
            series = self._scores.get(key)
            if series is None:
                series = self._scores[key] = deque(maxlen=self._history)
            series.append(point)
            known = self._drift.get(point.model)
            if point.drift is not None and (known is None or known.count <= point.drift.count):
                self._drift[point.model] = point.drift

    def add_prediction(
        self,
        model: str,
        version: int,
        ts: int,
        calibration: tuple[float, float] | None = None,
    ) -> None:
        """Note a prediction made by ``model`` version ``version`` at ``ts`` (recalibrated
        with ``calibration``, if given)."""
        with self._lock:
            key = (model, version)
            self._served[key] = self._served.get(key, 0) + 1
            if self._serving is None or self._serving.ts <= ts:
                self._serving = Serving(model, version, ts, calibration)

    def add_deadletter(self, letter: DeadLetter) -> None:
        """Keep a dead letter (the oldest go first)."""
        with self._lock:
            self._dead.append(letter)
            self._dead_total += 1

    def add_request(self, correlation_id: str | None, ts: int) -> None:
        """Count a request; remember when it was sent, to time its reply."""
        with self._lock:
            stats = self._requests
            stats.requests += 1
            if correlation_id is None:
                return
            replied = stats.early.pop(correlation_id, None)
            if replied is not None:
                self._matched(replied - ts)
                return
            stats.pending[correlation_id] = ts
            while len(stats.pending) > MAX_PENDING:
                stats.pending.popitem(last=False)

    def add_reply(self, correlation_id: str | None, ts: int, *, error: bool = False) -> None:
        """Count a reply; time it against its request (read before or after it)."""
        with self._lock:
            stats = self._requests
            stats.replies += 1
            stats.errors += int(error)
            if correlation_id is None:
                return
            sent = stats.pending.pop(correlation_id, None)
            if sent is not None:
                self._matched(ts - sent)
                return
            stats.early[correlation_id] = ts
            while len(stats.early) > MAX_PENDING:
                stats.early.popitem(last=False)

    def _matched(self, latency_ms: int) -> None:
        self._requests.matched += 1
        self._requests.latencies.append(max(0, latency_ms))

    def add_groups(self, groups: Sequence[GroupSample], topics: Sequence[TopicSample]) -> None:
        """Add one sample of every consumer group and topic (two are kept, for rates)."""
        with self._lock:
            for sample in groups:
                self._groups.setdefault(sample.group, deque(maxlen=2)).append(sample)
            for topic in topics:
                self._topics.setdefault(topic.topic, deque(maxlen=2)).append(topic)

    # --- reading -------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """A consistent copy of everything, for the views."""
        with self._lock:
            stats = self._requests
            return Snapshot(
                versions={n: [v[k] for k in sorted(v)] for n, v in self._versions.items() if v},
                scores={k: list(v) for k, v in self._scores.items()},
                drift=dict(self._drift),
                serving=self._serving,
                served=dict(self._served),
                deadletters=list(reversed(self._dead)),
                deadletters_total=self._dead_total,
                requests=stats.requests,
                replies=stats.replies,
                matched=stats.matched,
                reply_errors=stats.errors,
                pending=len(stats.pending),
                latencies=list(stats.latencies),
                groups={g: list(s) for g, s in self._groups.items()},
                topics={t: list(s) for t, s in self._topics.items()},
                models_loaded=self._models_loaded,
            )


@dataclass(frozen=True)
class Snapshot:
    """Everything the dashboard knows at one time (copies: safe to read without a lock)."""

    versions: Mapping[str, list[VersionRow]] = field(default_factory=dict)
    scores: Mapping[tuple[str, int], list[ScorePoint]] = field(default_factory=dict)
    drift: Mapping[str, Drift] = field(default_factory=dict)
    serving: Serving | None = None
    served: Mapping[tuple[str, int], int] = field(default_factory=dict)
    deadletters: list[DeadLetter] = field(default_factory=list)
    deadletters_total: int = 0
    requests: int = 0
    replies: int = 0
    matched: int = 0
    reply_errors: int = 0
    pending: int = 0
    latencies: list[int] = field(default_factory=list)
    groups: Mapping[str, list[GroupSample]] = field(default_factory=dict)
    topics: Mapping[str, list[TopicSample]] = field(default_factory=dict)
    models_loaded: bool = False
