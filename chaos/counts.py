"""What a chaos run saw on the topics, and the figures computed from it (no I/O here)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


def digest(value: bytes | None) -> str:
    """A short fingerprint of a record value, to match a dead letter with its original."""
    return hashlib.sha256(value or b"").hexdigest()[:16]


@dataclass(frozen=True)
class DeadLetter:
    """One record of ``deadletter``: who sent it, why, and what it was."""

    service: str
    error: str
    source_topic: str
    value_digest: str
    key: bytes | None = None
    source_partition: int | None = None
    source_offset: int | None = None

    def came_from(self, topic: str, partition: int, offset: int) -> bool:
        """True when the headers name this record as the origin."""
        return (self.source_topic, self.source_partition, self.source_offset) == (
            topic,
            partition,
            offset,
        )


@dataclass
class Observed:
    """Everything a run read from its topics, filled in as records arrive.

    ``valid`` holds the ids of the points of ``points`` that follow the contract
    (and have the stream's width); ``predicted`` counts predictions per id;
    ``prediction_times`` keeps, per ``predictions`` partition, the append time of
    each prediction in ms; ``model_times`` the time of each published model version.
    """

    valid: set[str] = field(default_factory=set)
    point_copies: Counter[str] = field(default_factory=Counter)
    invalid_points: int = 0
    invalid_at: set[tuple[int, int]] = field(default_factory=set)  # (partition, offset)
    predicted: Counter[str] = field(default_factory=Counter)
    served: dict[tuple[str, int], int] = field(default_factory=dict)  # (model, version) -> ms
    prediction_times: dict[int, list[int]] = field(default_factory=dict)
    deadletters: list[DeadLetter] = field(default_factory=list)
    models: list[tuple[int, str, int]] = field(default_factory=list)  # (ms, name, version)
    bad_models: int = 0

    def add_point(self, point_id: str | None, partition: int = 0, offset: int = -1) -> None:
        """A ``points`` record: its id when it is a valid point, else None."""
        if point_id is None:
            self.invalid_points += 1
            self.invalid_at.add((partition, offset))
            return
        self.valid.add(point_id)
        self.point_copies[point_id] += 1

    def add_prediction(
        self, point_id: str, partition: int, appended_ms: int, model: tuple[str, int] | None = None
    ) -> None:
        """A ``predictions`` record (and the model version that made it)."""
        self.predicted[point_id] += 1
        self.prediction_times.setdefault(partition, []).append(appended_ms)
        if model is not None and model not in self.served:
            self.served[model] = appended_ms

    def missing(self, ids: Iterable[str] | None = None) -> list[str]:
        """Valid point ids (or those of ``ids``) without a prediction yet, sorted."""
        wanted = self.valid if ids is None else ids
        return sorted(i for i in wanted if i not in self.predicted)

    def versions(self, name: str | None = None) -> list[int]:
        """Versions published (of ``name``, or of every model), in the order they came."""
        return [v for _, n, v in self.models if name is None or n == name]


def duplicated(predicted: Mapping[str, int]) -> int:
    """How many ids were predicted more than once."""
    return sum(1 for count in predicted.values() if count > 1)


def lost(
    valid: Iterable[str], predicted: Mapping[str, int], excused: Iterable[str] = ()
) -> list[str]:
    """Valid ids never predicted, except ``excused`` ones (e.g. dead-lettered with a reason)."""
    pardoned = set(excused)
    return sorted(i for i in valid if i not in predicted and i not in pardoned)


def recovery_s(times: Mapping[int, Sequence[int]], fault_end_ms: int) -> float | None:
    """Seconds from the end of a fault until every active partition had a new prediction.

    A partition is active when it had a prediction before the fault ended (all
    partitions with predictions when none had). For each, the first prediction
    appended at or after ``fault_end_ms`` counts; the slowest partition decides.
    None when an active partition never had one: the stream did not recover.
    """
    active = {p: t for p, t in times.items() if t and min(t) < fault_end_ms}
    if not active:
        active = {p: t for p, t in times.items() if t}
    if not active:
        return None
    worst = 0
    for stamps in active.values():
        after = [t for t in stamps if t >= fault_end_ms]
        if not after:
            return None
        worst = max(worst, min(after) - fault_end_ms)
    return worst / 1000.0


def first_after_s(stamps: Iterable[int], since_ms: int) -> float | None:
    """Seconds from ``since_ms`` to the first of ``stamps`` at or after it (None: none was)."""
    after = [t for t in stamps if t >= since_ms]
    return (min(after) - since_ms) / 1000.0 if after else None


def worst(values: Sequence[float | None]) -> float | None:
    """The largest value; None when any is None (a fault never recovered from) or none exist."""
    if not values or any(v is None for v in values):
        return None
    return max(v for v in values if v is not None)


@dataclass
class RunResult:
    """The figures of one run of one scenario, and why it failed if it did."""

    scenario: str
    client: str
    points: int = 0
    sent: int | None = None
    lost: int = 0
    duplicated: int = 0
    deadletters: int = 0
    recoveries: list[float | None] = field(default_factory=list)
    exited: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """True when nothing failed."""
        return not self.failures

    def fail(self, reason: str) -> None:
        """Record a reason the run failed."""
        self.failures.append(reason)


def judge(
    result: RunResult,
    *,
    exactly_once: bool,
    faults: int,
) -> RunResult:
    """Add the failures every scenario shares: loss, duplicates (exactly-once), exits, recovery."""
    if result.points == 0:
        result.fail("no point reached the points topic")
    if result.lost:
        result.fail(f"{result.lost} valid point(s) never predicted")
    if exactly_once and result.duplicated:
        result.fail(f"{result.duplicated} point(s) predicted more than once in exactly-once mode")
    if result.exited:
        result.fail(f"services exited: {', '.join(result.exited)}")
    if faults and len(result.recoveries) < faults:
        result.fail(f"only {len(result.recoveries)} of {faults} faults were injected")
    never = sum(1 for r in result.recoveries if r is None)
    if never:
        result.fail(f"no new prediction after {never} of {len(result.recoveries)} fault(s)")
    return result
