"""The scorer's loop: poll points, predict the batch, publish, commit."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError, ProducerFencedError
from kafka.structs import OffsetAndMetadata, TopicPartition

from bus.clients import make_consumer, make_producer
from bus.deadletter import DeadLetters
from bus.messages import Point, Prediction
from bus.settings import KafkaSettings
from bus.topics import Topics
from scorer.batch import PointBatch, parse_points
from scorer.config import ScorerConfig
from scorer.models_feed import ModelFeed, describe
from scorer.policy import ServingPolicy
from scorer.quality import Scoreboard
from scorer.registry import FloatArray, LiveModel, ModelRegistry
from scorer.requests import RequestServer
from streamscore.errors import BusError
from streamscore.shutdown import StopFlag

log = logging.getLogger(__name__)

STATS_EVERY_S = 10.0

# (model, labels, that model's predictions) for the labelled points of a batch
Labelled = tuple[LiveModel, FloatArray, FloatArray]


@dataclass
class ScorerStats:
    """What the scorer has done since it started."""

    points: int = 0
    predictions: int = 0
    deadletters: int = 0
    batches: int = 0
    aborted: int = 0


class Scorer:
    """Consumes ``points`` and ``models``; publishes ``predictions`` and ``scores``.

    Each batch is validated, predicted in one numpy call per model, produced, then
    committed: after a flush (at-least-once) or in the same Kafka transaction as
    the outputs (exactly-once). While no model serves, points are not even polled:
    the stream holds, and scoring starts at the first unscored point.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topics: Topics,
        config: ScorerConfig,
        *,
        stop: StopFlag | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._topics = topics
        self._config = config
        self._stop = stop or StopFlag()
        self._clock = clock
        self.stats = ScorerStats()
        self.registry = ModelRegistry(config.model_history)
        self.policy = ServingPolicy(config.policy, config.hysteresis, config.min_scored)
        self.board = Scoreboard(
            config.window, config.scores_every, config.scores_interval_s, clock()
        )
        # Replies and dead model messages go through a plain producer, never a transaction.
        self._side_producer: KafkaProducer = make_producer(settings, linger_ms=0)
        if config.exactly_once:
            self._producer: KafkaProducer = make_producer(
                settings,
                transactional_id=config.transactional_id,
                transaction_timeout_ms=15_000,
            )
            self._producer.init_transactions()
        else:
            self._producer = make_producer(settings)
        self._deadletters = DeadLetters(self._producer, topics.deadletter, "scorer")
        self._feed = ModelFeed(
            settings,
            topics.models,
            self.registry,
            DeadLetters(self._side_producer, topics.deadletter, "scorer"),
        )
        self._consumer: KafkaConsumer = make_consumer(
            settings,
            topics.points,
            group_id=config.group_id,
            max_poll_records=config.max_batch,
            fetch_max_wait_ms=config.poll_timeout_ms,
        )
        self._requests = RequestServer(
            settings,
            topic=topics.requests,
            group_id=config.requests_group_id,
            registry=self.registry,
            serving=self.serving,
            producer=self._side_producer,
            max_age_s=config.request_max_age_s,
        )

    def serving(self) -> LiveModel | None:
        """The model answering right now (None while holding)."""
        return self.policy.serving(self.registry.latest())

    # --- the loop ------------------------------------------------------------------

    def run(self) -> ScorerStats:
        """Score until stopped; then finish the batch, flush, commit and leave the group."""
        self._feed.catch_up()
        self._requests.start()
        log.info(
            "scoring %s -> %s (%s, policy %s)",
            self._topics.points,
            self._topics.predictions,
            self._config.delivery,
            self._config.policy,
        )
        next_models = next_stats = 0.0
        try:
            while not self._stop.is_set():
                if self._requests.failed is not None:
                    raise BusError(f"the request server failed: {self._requests.failed}")
                now = time.monotonic()
                if now >= next_models:
                    self._feed.poll(0)
                    next_models = now + self._config.model_poll_interval_s
                if self.serving() is None:
                    self._feed.poll(500)  # hold: wait for a model, do not touch points
                    continue
                polled = self._consumer.poll(timeout_ms=self._config.poll_timeout_ms)
                records = [r for batch in polled.values() for r in batch]
                if records or self.board.due(self._clock()):
                    self._process(records)
                if now >= next_stats:
                    self._log_stats()
                    next_stats = now + STATS_EVERY_S
        finally:
            self._close()
        return self.stats

    def _process(self, records: list[ConsumerRecord]) -> None:
        batch = parse_points(records)
        if self._config.exactly_once:
            self._producer.begin_transaction()
        try:
            labelled = self._publish(batch)
            if self._config.exactly_once:
                if records:
                    self._producer.send_offsets_to_transaction(
                        _next_offsets(records), self._consumer.group_metadata()
                    )
                self._producer.commit_transaction()
            else:
                self._producer.flush()
                if records:
                    self._consumer.commit(_next_offsets(records))
        except ProducerFencedError as exc:
            raise BusError(
                f"another scorer uses transactional id {self._config.transactional_id!r}; "
                "give each scorer its own STREAMSCORE_SCORER_TRANSACTIONAL_ID"
            ) from exc
        except KafkaError as exc:
            if not self._config.exactly_once:
                raise
            log.warning("transaction aborted (%s); the batch will be read again", exc)
            self._producer.abort_transaction()
            self._rewind(records)
            self.stats.aborted += 1
            return
        self.stats.batches += 1
        self.stats.points += len(records)
        self.stats.deadletters += len(batch.invalid)
        self._learn(labelled)

    def _publish(self, batch: PointBatch) -> list[Labelled]:
        """Send predictions, dead letters and due scores; return the labelled rows to learn."""
        for record, reason in batch.invalid:
            self._deadletters.send(record, reason)
        labelled: list[Labelled] = []
        model = self.serving()
        if batch.points and model is not None:
            records, points = self._fit_width(batch, model)
            if points:
                x = np.asarray([p.x for p in points], dtype=np.float64)
                values = model.predict(x)
                send = self._producer.send
                topic = self._topics.predictions
                for record, point, value in zip(records, points, values.tolist(), strict=True):
                    prediction = Prediction(
                        point.id,
                        value,
                        model.name,
                        model.version,
                        point.y,
                        point.ts if point.ts is not None else record.timestamp,
                    )
                    send(topic, key=record.key, value=prediction.to_bytes())
                self.stats.predictions += len(points)
                labelled = self._labelled(model, x, points, values)
        now = self._clock()
        if self.board.due(now):
            for score in self.board.publish(now):
                key = score.model.encode()
                self._producer.send(self._topics.scores, key=key, value=score.to_bytes())
        return labelled

    def _fit_width(
        self, batch: PointBatch, model: LiveModel
    ) -> tuple[list[ConsumerRecord], list[Point]]:
        """Keep the points with the serving model's feature count; dead-letter the rest."""
        width = model.n_features
        if all(len(p.x) == width for p in batch.points):
            return batch.records, batch.points
        records, points = [], []
        for record, point in zip(batch.records, batch.points, strict=True):
            if len(point.x) == width:
                records.append(record)
                points.append(point)
            else:
                reason = (
                    f"expected {width} features, got {len(point.x)} "
                    f"(model {model.name!r} v{model.version})"
                )
                self._deadletters.send(record, reason)
                self.stats.deadletters += 1
        return records, points

    def _labelled(
        self, serving: LiveModel, x: FloatArray, points: list[Point], values: FloatArray
    ) -> list[Labelled]:
        """(model, y, prediction) for every live model on the labelled points."""
        index = [i for i, p in enumerate(points) if p.y is not None]
        if not index:
            return []
        y_true = np.asarray([points[i].y for i in index], dtype=np.float64)
        x_labelled = x[index]
        out = [(serving, y_true, values[index])]
        for model in self.registry.latest().values():
            if model.name != serving.name and model.n_features == x.shape[1]:
                out.append((model, y_true, model.predict(x_labelled)))
        return out

    def _learn(self, labelled: list[Labelled]) -> None:
        """Update rolling scores (after the commit, so a retried batch is not counted twice)."""
        live = self.registry.latest()
        self.board.retire(live.values())
        if not labelled:
            return
        self.board.labelled(len(labelled[0][1]))
        for model, y_true, y_pred in labelled:
            if live.get(model.name) is model:
                self.board.update(model, y_true, y_pred)
        self.policy.review(live, self.board)

    def _rewind(self, records: list[ConsumerRecord]) -> None:
        first: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            first[tp] = min(first.get(tp, record.offset), record.offset)
        for tp, offset in first.items():
            self._consumer.seek(tp, offset)

    def _log_stats(self) -> None:
        model = self.serving()
        log.info(
            "points %d, predictions %d, dead letters %d, requests %d; serving %s; live: %s",
            self.stats.points,
            self.stats.predictions,
            self.stats.deadletters,
            self._requests.answered,
            f"{model.name} v{model.version}" if model else "none (holding)",
            describe(self.registry) or "none",
        )

    def _close(self) -> None:
        log.info("stopping: flushing and leaving the group")
        self._requests.stop()
        self._feed.close()
        self._consumer.close()
        self._producer.close(timeout=10)
        self._side_producer.close(timeout=10)
        self._log_stats()


def _next_offsets(records: list[ConsumerRecord]) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offset after the last record of each partition: what to commit."""
    last: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        last[tp] = max(last.get(tp, -1), record.offset)
    return {tp: OffsetAndMetadata(offset + 1, "", -1) for tp, offset in last.items()}
