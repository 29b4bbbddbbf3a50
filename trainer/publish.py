"""When to publish: a pure policy, the clock passed in.

Every publication is ONE transaction holding the dead letters found since the
previous one, the new model versions, the checkpoint and the consumer offsets
(`trainer.step`): either all of it is visible to read_committed readers, or none
of it. Between publications nothing is committed, so a trainer that dies loses
only work that its successor redoes from the same offsets.

A transaction takes tens of milliseconds of waiting on the broker; the stream
kernel commits it in the background while the trainer keeps training. At most
one is in flight: when a publication falls due meanwhile, it waits and then
carries everything trained so far. At high rates versions therefore come as
fast as transactions complete, each covering at least ``every`` points.
"""

from __future__ import annotations

#: After a drift, versions come ``QUICK`` times as often (every ``every // QUICK`` points).
QUICK = 10
#: ... but never for fewer points than this; until this many points (and ``every // QUICK``)
#: were trained since the drift, a version is due after every batch.
MIN_QUICK = 50


class PublishPolicy:
    """Decides when a publication is due; pure logic, the clock is passed in.

    Due when ``every`` labelled points were trained since the previous version;
    or when trained points, dead letters or just consumed offsets have waited
    ``interval_s`` since the first of them; or when ``max_deadletters`` dead
    letters wait (they are written inside the transaction). After a `drift`, a
    version is due after every batch until ``every // QUICK`` points (at least
    `MIN_QUICK`) were trained since it: each model's first version of the new regime
    is published as soon as its fit rests on enough points (the trainer publishes
    none before), whatever the size of the batches. Then versions come every
    ``every // QUICK`` points until ``every`` points have been trained since the drift.
    """

    def __init__(self, every: int, interval_s: float, max_deadletters: int = 1000) -> None:
        self.every = every
        self.interval_s = interval_s
        self.max_deadletters = max_deadletters
        self.new_points = 0
        self.deadletters = 0
        self.pending_since: float | None = None
        self.quick_left = 0  # points still to train with quick publications
        self.since_drift = 0  # points trained since the last drift

    def drift(self) -> None:
        """A drift was found: publish quickly for the next ``every`` points."""
        self.quick_left = self.every
        self.since_drift = 0

    def note(self, *, points: int, deadletters: int, consumed: bool, now: float) -> None:
        """Record a processed batch: labelled points trained, dead letters, records read."""
        self.new_points += points
        self.quick_left = max(0, self.quick_left - points)
        self.since_drift += points
        self.deadletters += deadletters
        if self.pending_since is None and (points or deadletters or consumed):
            self.pending_since = now

    @property
    def pending(self) -> bool:
        """True when something read since the last publication is not committed yet."""
        return self.pending_since is not None

    def due(self, now: float) -> bool:
        """True when a publication should start now."""
        if self.pending_since is None:
            return False
        return (
            self.new_points >= self.every
            or (self.quick_left > 0 and self.new_points >= self._quick_points())
            or self.deadletters >= self.max_deadletters
            or now - self.pending_since >= self.interval_s
        )

    def _quick_points(self) -> int:
        """Points a quick version waits for: one batch at first, then ``every // QUICK``."""
        quick = max(MIN_QUICK, self.every // QUICK)
        return 1 if self.since_drift <= quick else quick

    def published(self) -> None:
        """Everything noted so far is in a publication."""
        self.new_points = 0
        self.deadletters = 0
        self.pending_since = None
