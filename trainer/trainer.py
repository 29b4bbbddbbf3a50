"""The trainer's loop: poll labelled points, fit every model, publish versions.

One trainer runs per group at a time. Its producer is transactional
(``transactional_id``): starting a second copy fences the first, whose open
transaction is aborted and whose next one fails, so it stops. The trainer reads
every partition of ``points`` itself (manual assignment, not a group
subscription): a model must see the whole stream, and splitting partitions
between copies would train different models under one name. The group id names
the committed offsets (visible as the trainer's lag) and the checkpoint.

Start: fence older copies, read the latest checkpoint and the latest versions on
``models``, restore the regressors, seek ``points`` to the checkpoint's offsets
(the beginning for partitions it does not know). Loop: poll a chunk of raw record
batches (`trainer.fetch`), have it decoded and validated (`trainer.batch`) by
worker processes (`trainer.pool`), then, in poll order, score and fit each model
on its labelled points; when a publication is due (`trainer.publish.PublishPolicy`)
write the new versions, the dead letters, the checkpoint and the offsets in one
transaction, on a background thread. Stop: finish the chunks in hand, publish what
is pending, close the consumer.

Restart equivalence: a checkpoint holds the exact training state at exactly its
offsets, so a restarted trainer trains on the same remaining points as one that
never stopped. In cumulative mode the result does not depend on the order in
which partitions are read (least squares over the same set of points; only
rounding differs, ~1e-15). In window mode the window is the last W labelled points
*in the order read*; across partitions that order is Kafka's interleaving, which
a restart may change, so windows are reproducible for a single-partition topic
(or an unchanged interleaving) only.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Literal, cast

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from bus.clients import make_consumer, make_producer
from bus.deadletter import DeadLetters
from bus.messages import ModelVersion
from bus.settings import KafkaSettings
from bus.topics import Topics
from regressors.base import MAX_ABS_VALUE
from streamscore.errors import BusError
from streamscore.shutdown import StopFlag
from trainer.config import TrainerConfig
from trainer.fetch import Chunk, chunks_of, install_fast_records
from trainer.models import ModelSlot
from trainer.pool import ParsedChunk, ParsePool
from trainer.publish import Publication, Publisher, PublishPolicy
from trainer.recovery import read_checkpoint, read_versions, wait_for_partitions
from trainer.state import Checkpoint, StateError, encode_checkpoint

log = logging.getLogger(__name__)

STATS_EVERY_S = 10.0
PARTITION_CHECK_S = 30.0


@dataclass
class TrainerStats:
    """What the trainer has done since it started."""

    records: int = 0
    labelled: int = 0
    unlabelled: int = 0
    deadletters: int = 0
    versions: int = 0
    transactions: int = 0
    fast_fetch: bool = False


class Trainer:
    """Fits the configured regressors on ``points`` and publishes them to ``models``.

    ``clock`` gives epoch seconds (``created_at`` and the publication interval);
    ``stop`` ends the loop after the current chunk. ``run()`` blocks, so tests run
    it in a thread.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topics: Topics,
        config: TrainerConfig,
        *,
        clock: Callable[[], float] = time.time,
        stop: StopFlag | None = None,
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._config = config
        self._clock = clock
        self._stop = stop or StopFlag()
        self.stats = TrainerStats()
        self._window = config.window_or_none
        self._slots = [ModelSlot.fresh(spec, self._window) for spec in config.models]
        self._max_abs_x = min(slot.max_abs_input for slot in self._slots)
        self._n_features = config.n_features_or_none
        self._count = 0
        self._offsets: dict[int, int] = {}
        self._versions: dict[str, int] = {}
        self._seq = 0
        self._parts = 0
        self._deadletter_total = 0
        self._pending_dead: list[tuple[ConsumerRecord, str]] = []
        self._policy = PublishPolicy(
            config.publish_every, config.publish_interval_s, config.max_pending_deadletters
        )
        self._producer: KafkaProducer | None = None
        self._consumer: KafkaConsumer | None = None
        self._publisher: Publisher | None = None
        self._fast = False
        self._partitions: list[int] = []
        self._pool: ParsePool | None = None
        self._inflight: deque[tuple[Chunk, Future[ParsedChunk]]] = deque()
        self._max_inflight = 2 * config.workers
        self._logged_labelled = 0

    # --- public -------------------------------------------------------------------

    @property
    def versions(self) -> dict[str, int]:
        """The last version published (or recovered) per model name."""
        return dict(self._versions)

    def run(self) -> TrainerStats:
        """Train until the stop flag is set; publish what is pending; return the stats."""
        try:
            self._open()
            last_stats, last_check = self._clock(), self._clock()
            while not self._stop.is_set():
                self._step()
                now = self._clock()
                if now - last_check >= PARTITION_CHECK_S:
                    self._watch_partitions()
                    last_check = now
                if now - last_stats >= STATS_EVERY_S:
                    self._log_stats(now - last_stats)
                    last_stats = now
            self._finish()
        finally:
            self._close()
        return self.stats

    # --- start ----------------------------------------------------------------------

    def _open(self) -> None:
        config, topics = self._config, self._topics
        self._producer = make_producer(
            self._settings, transactional_id=config.transactional_id, linger_ms=0
        )
        try:
            self._producer.init_transactions()  # fences an older copy before reading its state
        except KafkaError as exc:
            raise BusError(
                f"cannot start transactions as {config.transactional_id!r}: {exc}"
            ) from exc
        checkpoint, self._parts = read_checkpoint(
            self._settings, topics.trainer_state, config.group_id
        )
        names = {spec.name for spec in config.models}
        if checkpoint is not None:
            self._restore(checkpoint)
            names |= checkpoint.versions.keys()
        for name, version in read_versions(self._settings, topics.models, names).items():
            if version > self._versions.get(name, 0):
                log.info("model %r: version %d found on %s", name, version, topics.models)
                self._versions[name] = version
        self._publisher = Publisher(
            self._producer,
            DeadLetters(self._producer, topics.deadletter, "trainer"),
            config.group_id,
            config.transactional_id,
        )
        self._pool = ParsePool(config.workers, self._max_abs_x, MAX_ABS_VALUE)
        self._consumer = make_consumer(
            self._settings,
            group_id=config.group_id,
            check_crcs=False,
            max_poll_records=config.max_records,
        )
        if config.fast_fetch:
            self._fast = install_fast_records(self._consumer, config.max_records)
        self.stats.fast_fetch = self._fast
        self._partitions = wait_for_partitions(self._consumer, topics.points, 15.0)
        self._assign(self._partitions, checkpoint)
        log.info(
            "training %s on %s (%d partitions, %s) from %s",
            ", ".join(spec.describe() for spec in config.models),
            topics.points,
            len(self._partitions),
            f"window {self._window}" if self._window else "cumulative",
            f"checkpoint {checkpoint.seq}" if checkpoint else "the beginning",
        )

    def _restore(self, checkpoint: Checkpoint) -> None:
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
        self._n_features = checkpoint.n_features or self._n_features
        self._count = checkpoint.count
        self._offsets = dict(checkpoint.offsets)
        self._versions = dict(checkpoint.versions)
        self._seq = checkpoint.seq
        self._deadletter_total = checkpoint.deadletters
        for i, slot in enumerate(self._slots):
            state = checkpoint.models.get(slot.spec.name)
            if state is None:
                log.info("model %r is new: it trains from the current offsets on", slot.spec.name)
                continue
            self._slots[i] = ModelSlot.restore(slot.spec, self._window, state)
        dropped = checkpoint.models.keys() - {slot.spec.name for slot in self._slots}
        if dropped:
            log.info("no longer training %s (not configured)", ", ".join(sorted(dropped)))
        log.info(
            "restored checkpoint %d: %d points, offsets %s, versions %s",
            checkpoint.seq,
            checkpoint.count,
            checkpoint.offsets,
            checkpoint.versions,
        )

    def _assign(self, partitions: list[int], checkpoint: Checkpoint | None) -> None:
        consumer = self._consumer
        assert consumer is not None
        tps = [TopicPartition(self._topics.points, p) for p in partitions]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        for tp in tps:
            offset = self._offsets.get(tp.partition)
            if offset is not None and offset > ends[tp]:
                raise StateError(
                    f"the checkpoint of group {self._config.group_id!r} has read "
                    f"{tp.topic}[{tp.partition}] up to offset {offset}, but the partition ends "
                    f"at {ends[tp]}: was the topic recreated? Use another "
                    "STREAMSCORE_TRAINER_GROUP to train from scratch"
                )
            if offset is not None:
                consumer.seek(tp, offset)
            else:
                consumer.seek_to_beginning(tp)
        if checkpoint is None:
            committed = {tp.partition: consumer.committed(tp) for tp in tps}
            if any(o is not None for o in committed.values()):
                log.warning(
                    "group %r has committed offsets %s but no checkpoint on %s: the trained "
                    "state is gone, so training starts over from the beginning of %s",
                    self._config.group_id,
                    committed,
                    self._topics.trainer_state,
                    self._topics.points,
                )

    def _watch_partitions(self) -> None:
        """Start reading partitions added to ``points`` (from their beginning)."""
        consumer = self._consumer
        assert consumer is not None
        partitions = sorted(consumer.partitions_for_topic(self._topics.points) or [])
        added = set(partitions) - set(self._partitions)
        if not added:
            return
        log.info("points has new partitions %s: reading them too", sorted(added))
        positions = {
            p: consumer.position(TopicPartition(self._topics.points, p)) for p in self._partitions
        }
        self._partitions = partitions
        tps = [TopicPartition(self._topics.points, p) for p in partitions]
        consumer.assign(tps)
        for tp in tps:
            if tp.partition in positions:
                consumer.seek(tp, positions[tp.partition])
            else:
                consumer.seek_to_beginning(tp)

    # --- the loop ---------------------------------------------------------------------

    def _step(self) -> None:
        consumer, publisher, pool = self._consumer, self._publisher, self._pool
        assert consumer is not None and publisher is not None and pool is not None
        try:
            polled = consumer.poll(
                timeout_ms=self._config.poll_timeout_ms,
                max_records=1 if self._fast else self._config.max_records,
            )
        except KafkaError as exc:
            raise BusError(f"reading {self._topics.points} failed: {exc}") from exc
        for chunk in chunks_of(polled, self._fast):
            self._inflight.append((chunk, pool.submit(chunk, self._n_features)))
            self._apply_ready(self._max_inflight)
        self._apply_ready(self._max_inflight)
        publisher.check()
        now = self._clock()
        if not publisher.busy and self._policy.due(now):
            self._publish(now)

    def _apply_ready(self, limit: int) -> None:
        """Train on parsed chunks in poll order; wait while more than ``limit`` are parsing."""
        while self._inflight and (len(self._inflight) > limit or self._inflight[0][1].done()):
            chunk, future = self._inflight.popleft()
            try:
                parsed = future.result()
            except BrokenProcessPool as exc:
                raise BusError(f"a parsing worker process died: {exc}") from exc
            except KafkaError as exc:
                raise BusError(f"{chunk.topic}[{chunk.partition}]: {exc}") from exc
            self._train(chunk, parsed)

    def _train(self, chunk: Chunk, parsed: ParsedChunk) -> None:
        if self._n_features is None and parsed.n_features is not None:
            self._n_features = parsed.n_features
            log.info(
                "the stream has %d features (from its first labelled point)", parsed.n_features
            )
        self._pending_dead += parsed.deadletters
        if parsed.labelled:
            for slot in self._slots:
                slot.train(parsed.x, parsed.y)
        self._count += parsed.labelled
        self._offsets[chunk.partition] = chunk.next_offset
        stats = self.stats
        stats.records += parsed.records
        stats.labelled += parsed.labelled
        stats.unlabelled += parsed.unlabelled
        stats.deadletters += len(parsed.deadletters)
        self._deadletter_total += len(parsed.deadletters)
        self._policy.note(
            points=parsed.labelled,
            deadletters=len(parsed.deadletters),
            consumed=True,
            now=self._clock(),
        )

    def _publish(self, now: float) -> None:
        """Snapshot the state into a publication and start its transaction."""
        assert self._publisher is not None
        publication = Publication()
        created_at = int(now * 1000)
        offsets = {str(p): o for p, o in sorted(self._offsets.items())}
        if self._policy.new_points:
            for slot in self._slots:
                if not slot.regressor.is_fitted:
                    continue
                version = self._versions.get(slot.spec.name, 0) + 1
                self._versions[slot.spec.name] = version
                regressor = slot.regressor
                message = ModelVersion(
                    name=slot.spec.name,
                    version=version,
                    kind=cast(Literal["multivariate", "polynomial"], regressor.kind),
                    n_features=int(regressor.n_features or 0),
                    params=regressor.to_dict(),
                    trained_on={
                        "count": regressor.n_seen,
                        "offsets": offsets,
                        "window": self._window,
                        "new": self._policy.new_points,
                    },
                    train_score=slot.take_score(),
                    created_at=created_at,
                )
                publication.messages.append(
                    (self._topics.models, slot.spec.name.encode(), message.to_bytes(), [])
                )
                publication.versions += 1
        self._seq += 1
        checkpoint = Checkpoint(
            group=self._config.group_id,
            points_topic=self._topics.points,
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
        publication.messages += [
            (self._topics.trainer_state, key, value, headers) for key, value, headers in records
        ]
        publication.offsets = {
            TopicPartition(self._topics.points, p): OffsetAndMetadata(o, "", -1)
            for p, o in self._offsets.items()
        }
        publication.deadletters, self._pending_dead = self._pending_dead, []
        self._policy.published()
        self._publisher.submit(publication)
        self.stats.versions += publication.versions
        self.stats.transactions += 1
        log.debug("publishing checkpoint %d with %d versions", self._seq, publication.versions)

    # --- stop -------------------------------------------------------------------------

    def _finish(self) -> None:
        """Publish what is pending and wait for the last transaction."""
        publisher = self._publisher
        assert publisher is not None
        self._apply_ready(0)
        publisher.wait()
        if self._policy.pending:
            self._publish(self._clock())
            publisher.wait()
        log.info(
            "stopped: %d labelled points, %d versions, %d dead letters, versions %s",
            self._count,
            self.stats.versions,
            self.stats.deadletters,
            self._versions,
        )

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._publisher is not None:
            self._publisher.close()
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception as exc:
                log.debug("closing the consumer: %s", exc)
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception as exc:
                log.debug("closing the producer: %s", exc)

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
