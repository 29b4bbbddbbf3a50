"""The trainer as a step of the stream kernel: fit on chunks of points, publish versions.

`TrainingStep` is a `bus.stream.ChunkStep`; the kernel (`bus.stream.StreamRunner`,
exactly-once, assign mode, background commits) owns the clients, the loop, the
transactions, retries, fencing and the stop. The step:

- ``start``: once the kernel's producer holds the transactional id (older copies
  are fenced), reads back the group's latest checkpoint and the latest versions on
  ``models`` (`trainer.recovery`), restores the regressors, and tells the kernel to
  read each partition of ``points`` from the checkpoint's offsets (the beginning
  for partitions it does not know, and for partitions added later);
- ``process_chunks``: parses every chunk (`trainer.pool`: each value decoded on
  its own by the contract's codec, in worker processes for still-encoded chunks),
  then scores and fits each model on the labelled points, in poll order, the
  rows of consecutive chunks together (`TRAIN_ROWS`: fewer, larger fits); bad
  records come back as dead letters with their reasons. When a publication is due
  (`trainer.publish.PublishPolicy`) and none is in flight, the outcome carries the
  new versions and the checkpoint and asks for a commit: the kernel writes them,
  the dead letters since the previous publication and the offsets in ONE
  transaction;
- ``committed``: the publication went through: its checkpoint becomes the state a
  rewind goes back to;
- ``rewind``: a transaction was lost (a broker restart, a coordinator that aborted
  it, a timeout): the models, counts, offsets and versions go back to the last
  committed checkpoint, kept in memory, while the kernel seeks ``points`` back to
  its offsets; retraining from there gives what an uninterrupted run gives;
- ``finish``: the stop publishes what is pending.

``process_chunks`` never raises for a bad record (a value the parser cannot take
is dead-lettered here, with the parser's error as the reason), so the kernel never
redoes a batch one record at a time: the offsets of a checkpoint are always those
the kernel commits with it.

Restart equivalence: a checkpoint holds the exact training state at exactly its
offsets, so a restarted trainer trains on the same remaining points as one that
never stopped. In cumulative mode the result does not depend on the order in
which partitions are read (least squares over the same set of points; only
rounding differs, ~1e-15). In window mode the window is the last W labelled points
*in the order read*; across partitions that order is Kafka's interleaving, which
a restart may change, so windows are reproducible for a single-partition topic
(or an unchanged interleaving) only. With forgetting, each point is down-weighted
by the newer points of its own partition, so the fit does not depend on the
interleaving either; the drift watch does (it follows the model over every
partition, `regressors.forgetting`): a restart between a drift and its detection
may find it a few points apart, and retrain from there slightly differently.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping
from typing import cast

from bus.clients.base import Chunk, Driver, Record, TopicPartition
from bus.signing import ModelKey
from bus.stream import ChunkStep, Outcome
from bus.topics import Topics
from core.errors import BusError
from core.shutdown import StopFlag
from regressors.base import MAX_ABS_VALUE
from trainer.config import TrainerConfig
from trainer.models import ModelSlot
from trainer.pool import ParsedChunk, ParsePool, parse_alone
from trainer.publish import PublishPolicy
from trainer.recovery import read_start
from trainer.state import Checkpoint, StateError, encode_checkpoint
from trainer.versions import VersionWriter
from trainer.work import Rows, Saved, TrainerStats, Work, until_stopped

__all__ = ["STATS_EVERY_S", "TRAIN_ROWS", "TrainerStats", "TrainingStep"]

log = logging.getLogger(__name__)

STATS_EVERY_S = 10.0
#: Labelled rows of consecutive chunks fitted together (fewer, larger fits cost less).
TRAIN_ROWS = 4096


class TrainingStep(ChunkStep):
    """Fits the configured regressors on ``points`` and publishes them to ``models``.

    ``driver`` is used at start only, to read the checkpoint and the versions back
    (the kernel makes its own clients with it). ``clock`` gives epoch seconds
    (``created_at`` and the publication interval); ``pool`` parses chunks (default:
    ``config.workers`` processes; `open` starts them). With a ``model_key`` every
    version is signed (`bus.signing`), for scorers that load signed versions only.
    """

    def __init__(
        self,
        driver: Driver,
        topics: Topics,
        config: TrainerConfig,
        *,
        clock: Callable[[], float] = time.time,
        stop: StopFlag | None = None,
        pool: ParsePool | None = None,
        model_key: ModelKey | None = None,
    ) -> None:
        self._driver = driver
        self._topics = topics
        self._config = config
        self._clock = clock
        self._stop = stop or StopFlag()
        self._window = config.window_or_none
        self._training = config.training
        self._slots = [ModelSlot.fresh(spec, self._training) for spec in config.models]
        self._max_abs_x = min(slot.max_abs_input for slot in self._slots)
        self._pool = pool or ParsePool(config.workers, self._max_abs_x, MAX_ABS_VALUE)
        self._policy = PublishPolicy(
            config.publish_every, config.publish_interval_s, config.max_pending_deadletters
        )
        self.stats = TrainerStats()
        self._loaded = False
        self._started: set[int] = set()  # partitions the kernel was told where to start
        fresh = Checkpoint(group=config.group_id, points_topic=topics.points)
        fresh.n_features = config.n_features_or_none
        self._saved = Saved(fresh, {}, 0)
        self._state_partition = 0
        self._publishing: Saved | None = None  # the publication in flight
        self._writer = VersionWriter(model_key, self._window)
        # the training state, as of the last chunk trained
        self._n_features = config.n_features_or_none
        self._count = 0
        self._offsets: dict[int, int] = {}
        self._versions: dict[str, int] = {}
        self._seq = 0
        self._parts = 0
        self._deadletter_total = 0
        self._next_stats = 0.0
        self._logged_labelled = 0
        self._last_stats = 0.0

    # --- public -------------------------------------------------------------------

    @property
    def versions(self) -> dict[str, int]:
        """The last version published (or recovered) per model name."""
        return dict(self._versions)

    @property
    def count(self) -> int:
        """Labelled points trained on so far, committed or not."""
        return self._count

    def open(self) -> None:
        """Start the parsing workers (they take a moment), before the kernel starts."""
        self._pool.open()

    def close(self) -> None:
        """Stop the parsing workers."""
        self._pool.close()

    # --- kernel hooks: start ------------------------------------------------------

    def start(self, partitions: list[TopicPartition]) -> Mapping[TopicPartition, int | None]:
        """Read the state back (the first time), restore it; where to read each partition.

        Called again when the kernel starts over (a fault while it starts): the
        state goes back to what was read, nothing having been trained yet. Partitions
        added later start at their beginning.
        """
        if not self._loaded:
            self._loaded = self._load([tp.partition for tp in partitions])
            if not self._loaded:  # stopped while reading
                return {}
        elif self._started.intersection(tp.partition for tp in partitions):
            self._restore(self._saved)  # the kernel starts over
        self._started.update(tp.partition for tp in partitions)
        offsets = self._saved.checkpoint.offsets
        return {tp: offsets.get(tp.partition) for tp in partitions}

    def _load(self, partitions: list[int]) -> bool:
        """Read the checkpoint and versions back and restore them; False if stopped."""
        config, topics = self._config, self._topics
        names = [spec.name for spec in config.models]
        start = until_stopped(
            lambda: read_start(
                self._driver,
                topics,
                config.group_id,
                names=names,
                partitions=partitions,
                stop=self._stop,
            ),
            self._stop,
        )
        if start is None or self._stop.is_set():
            return False
        found, versions, positions = start.found, start.versions, start.positions
        checkpoint = found.checkpoint
        if checkpoint is not None:
            self._check(checkpoint)
        for partition, offset in (checkpoint.offsets if checkpoint else {}).items():
            end = positions.ends.get(partition)
            if end is not None and offset > end:
                raise StateError(
                    f"the checkpoint of group {config.group_id!r} has read "
                    f"{topics.points}[{partition}] up to offset {offset}, but the partition "
                    f"ends at {end}: was the topic recreated? Use another "
                    "STREAMSCORE_TRAINER_GROUP to train from scratch"
                )
        if checkpoint is None and any(o is not None for o in positions.committed.values()):
            log.warning(
                "group %r has committed offsets %s but no checkpoint on %s: the trained "
                "state is gone, so training starts over from the beginning of %s",
                config.group_id,
                {p: o for p, o in positions.committed.items() if o is not None},
                topics.trainer_state,
                topics.points,
            )
        base = checkpoint if checkpoint is not None else self._saved.checkpoint
        saved = Saved(copy.deepcopy(base), {}, found.parts)
        for name, version in versions.items():
            if version > saved.checkpoint.versions.get(name, 0):
                log.info("model %r: version %d found on %s", name, version, topics.models)
                saved.checkpoint.versions[name] = version
        self._state_partition = found.partition
        self._saved = saved
        self._restore(saved)
        self._describe(checkpoint, len(positions.partitions))
        return True

    def _check(self, checkpoint: Checkpoint) -> None:
        """Refuse a checkpoint taken on another topic, or of another dimension."""
        config = self._config
        if checkpoint.points_topic != self._topics.points:
            raise StateError(
                f"the checkpoint of group {config.group_id!r} was taken on topic "
                f"{checkpoint.points_topic!r}, not {self._topics.points!r}: use another "
                "STREAMSCORE_TRAINER_GROUP for another topic"
            )
        if config.n_features and checkpoint.n_features not in (None, config.n_features):
            raise StateError(
                f"STREAMSCORE_TRAINER_N_FEATURES={config.n_features} but group "
                f"{config.group_id!r} has trained on {checkpoint.n_features} features: "
                "use another STREAMSCORE_TRAINER_GROUP to start over"
            )
        dropped = checkpoint.models.keys() - {spec.name for spec in config.models}
        if dropped:
            log.info("no longer training %s (not configured)", ", ".join(sorted(dropped)))

    def _describe(self, checkpoint: Checkpoint | None, partitions: int) -> None:
        config = self._config
        if checkpoint is not None:
            log.info(
                "restored checkpoint %d: %d points, offsets %s, versions %s",
                checkpoint.seq,
                checkpoint.count,
                checkpoint.offsets,
                checkpoint.versions,
            )
        log.info(
            "training %s on %s (%d partitions, %s) from %s",
            ", ".join(spec.describe() for spec in config.models),
            self._topics.points,
            partitions,
            self._training.describe(),
            f"checkpoint {checkpoint.seq}" if checkpoint else "the beginning",
        )
        if not config.fast_fetch:
            log.info(
                "STREAMSCORE_TRAINER_FAST_FETCH=false has no effect: the Kafka client driver "
                "checks its own fast path at start and falls back by itself"
            )

    def _restore(self, saved: Saved) -> None:
        """Put the training state back to ``saved`` (a committed publication)."""
        checkpoint = saved.checkpoint
        self._n_features = checkpoint.n_features or self._config.n_features_or_none
        self._count = checkpoint.count
        self._offsets = dict(checkpoint.offsets)
        self._versions = dict(checkpoint.versions)
        self._seq = checkpoint.seq
        self._parts = saved.parts
        self._deadletter_total = checkpoint.deadletters
        for i, slot in enumerate(self._slots):
            spec = slot.spec
            state = checkpoint.models.get(spec.name)
            if state is None:
                self._slots[i] = ModelSlot.fresh(spec, self._training)
            else:
                self._slots[i] = ModelSlot.restore(spec, self._training, state)
            score = saved.scores.get(spec.name)
            if score is not None:
                self._slots[i].score = copy.copy(score)
        self._policy.published()
        self._publishing = None

    # --- kernel hooks: the loop ---------------------------------------------------

    def process_chunks(self, chunks: list[Chunk]) -> Outcome:
        """Train on the chunks in order; dead letters; a publication when one is due."""
        outcome = Outcome(commit=False)
        work = Work()
        rows = Rows(by_partition=self._window is None)
        for chunk, parsed in zip(chunks, self._pool.parse(chunks, self._n_features), strict=True):
            if isinstance(parsed, ParsedChunk):
                result = parsed
            else:
                log.warning(
                    "parsing %s[%d] failed (%s: %s): parsing it one value at a time",
                    chunk.topic,
                    chunk.partition,
                    type(parsed).__name__,
                    parsed,
                )
                result = parse_alone(chunk, self._n_features, self._max_abs_x, MAX_ABS_VALUE)
            self._take(chunk, result, work, outcome)
            rows.add(chunk.partition, result)
            if rows.count >= TRAIN_ROWS:
                self._fit(rows)
        self._fit(rows)
        now = self._clock()
        self._policy.note(
            points=work.labelled, deadletters=work.deadletters, consumed=True, now=now
        )
        outcome.context = work
        if self._publishing is None and self._policy.due(now):
            self._publish(outcome, now)
        return outcome

    def _take(self, chunk: Chunk, parsed: ParsedChunk, work: Work, outcome: Outcome) -> None:
        """Account for a parsed chunk: its offsets, its dead letters, its counts."""
        if self._n_features is None and parsed.n_features is not None:
            self._n_features = parsed.n_features
            log.info(
                "the stream has %d features (from its first labelled point)", parsed.n_features
            )
        self._offsets[chunk.partition] = chunk.next_offset
        for offset, key, value, reason in parsed.rejected:
            record = Record(chunk.topic, chunk.partition, offset, key, value, -1)
            outcome.deadletters.append((record, reason))
        work.records += parsed.records
        work.labelled += parsed.labelled
        work.unlabelled += parsed.unlabelled
        work.deadletters += len(parsed.rejected)
        self._deadletter_total += len(parsed.rejected)

    def _fit(self, rows: Rows) -> None:
        """Score and fit every model on the rows gathered (in the order read); empty them."""
        if not rows.count:
            return
        drifts = sum(slot.regressor.drifts for slot in self._slots)
        try:
            for partition, x, y in rows.take():
                for slot in self._slots:
                    slot.train(x, y, partition)
                self._count += len(y)
        except Exception as exc:  # the inputs were checked: a bug, not a bad record
            raise BusError(
                f"training failed ({type(exc).__name__}: {exc}); the trainer stops, and "
                "its next start resumes from the last checkpoint"
            ) from exc
        found = sum(slot.regressor.drifts for slot in self._slots) - drifts
        if found:
            log.info(
                "drift detected (%d of %d models forget their past): publishing soon",
                found,
                len(self._slots),
            )
            self._policy.drift()

    def _publish(self, outcome: Outcome, now: float) -> None:
        """Add the new versions and the checkpoint to ``outcome``, and ask for a commit."""
        topics, config = self._topics, self._config
        created_at = int(now * 1000)
        offsets = {str(p): o for p, o in sorted(self._offsets.items())}
        names: list[bytes | None] = []
        values: list[bytes | None] = []
        if self._policy.new_points:
            for slot in self._slots:
                if not self._writer.ready(slot):
                    continue
                name = slot.spec.name
                version = self._versions.get(name, 0) + 1
                value = self._writer.encode(
                    slot, version, offsets, created_at, self._policy.new_points
                )
                if value is None:
                    continue
                self._versions[name] = version
                names.append(name.encode())
                values.append(value)
        self._seq += 1
        checkpoint = Checkpoint(
            group=config.group_id,
            points_topic=topics.points,
            seq=self._seq,
            created_at=created_at,
            n_features=self._n_features,
            count=self._count,
            offsets=dict(self._offsets),
            versions=dict(self._versions),
            deadletters=self._deadletter_total,
            models={
                slot.spec.name: slot.regressor.state_dict()
                for slot in self._slots
                if slot.regressor.is_trainable
            },
        )
        records = encode_checkpoint(checkpoint, self._parts)
        self._parts = sum(1 for _, value, _ in records if value is not None)
        if values:
            outcome.add(topics.models, values, names)
        outcome.add(
            topics.trainer_state,
            [value for _, value, _ in records],
            [key for key, _, _ in records],
            [self._state_partition] * len(records),
            [headers for _, _, headers in records],
        )
        saved = Saved(
            checkpoint, {s.spec.name: copy.copy(s.score) for s in self._slots}, self._parts
        )
        work = cast(Work, outcome.context)
        work.saved, work.versions = saved, len(values)
        outcome.commit = True
        self._publishing = saved
        self._policy.published()
        log.debug("publishing checkpoint %d with %d versions", self._seq, len(values))

    def committed(self, outcome: Outcome) -> None:
        """Count the committed work; a committed publication becomes the rewind point."""
        work = outcome.context
        stats = self.stats
        if not isinstance(work, Work):
            return
        stats.records += work.records
        stats.labelled += work.labelled
        stats.unlabelled += work.unlabelled
        stats.deadletters += work.deadletters
        if work.saved is not None:
            self._saved = work.saved
            stats.versions += work.versions
            stats.transactions += 1
            if self._publishing is work.saved:
                self._publishing = None

    def rewind(self) -> None:
        """Back to the last committed checkpoint (the kernel seeks to its offsets)."""
        log.info(
            "retraining from checkpoint %d (offsets %s)",
            self._saved.checkpoint.seq,
            self._saved.checkpoint.offsets,
        )
        self._restore(self._saved)

    def idle(self) -> Outcome | None:
        """Nothing new: publish what waits once the interval is over."""
        now = self._clock()
        if self._publishing is not None or not self._policy.due(now):
            return None
        outcome = Outcome(context=Work())
        self._publish(outcome, now)
        return outcome

    def tick(self) -> bool:
        """Log the progress every `STATS_EVERY_S`."""
        now = time.monotonic()
        if now >= self._next_stats:
            if self._next_stats:
                self._log_stats(now - self._last_stats)
            self._last_stats = now
            self._next_stats = now + STATS_EVERY_S
        return True

    def finish(self) -> Outcome | None:
        """Stopping: publish what is pending."""
        if self._publishing is not None or not self._policy.pending:
            return None
        outcome = Outcome(context=Work())
        self._publish(outcome, self._clock())
        return outcome

    def _log_stats(self, elapsed: float) -> None:
        stats = self.stats
        rate = (stats.labelled - self._logged_labelled) / elapsed if elapsed > 0 else 0.0
        self._logged_labelled = stats.labelled
        log.info(
            "%d records (%d labelled, %.0f/s), %d dead letters, %d versions, latest %s",
            stats.records,
            stats.labelled,
            rate,
            stats.deadletters,
            stats.versions,
            self._versions,
        )
