"""Reading a run's topics from the outside while it runs: points, predictions, dead letters, models.

One group-less consumer (read_committed) follows every partition of the four
topics from their start. It is independent of the client the services use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from bus.clients import make_consumer
from bus.messages import ModelVersion, Point, Prediction
from bus.settings import KafkaSettings
from bus.topics import Topics
from chaos.counts import DeadLetter, Observed, digest
from core.errors import BusError, MessageError

log = logging.getLogger(__name__)

#: A consumer that has not moved for this long while records wait is replaced.
STUCK_S = 15.0


class _PointShape(msgspec.Struct):
    """What the watcher needs of a point of the producer: its id and width."""

    id: str
    x: list[float]


class _PredictionShape(msgspec.Struct):
    """What the watcher needs of a prediction."""

    id: str
    model: str
    version: int


_POINT = msgspec.json.Decoder(_PointShape)
_PREDICTION = msgspec.json.Decoder(_PredictionShape)


class Watcher:
    """Follows the run's topics and keeps what it saw in `observed`.

    Points are judged by the contract (`Point.from_bytes`), except the producer's
    own (ids starting with ``producer_ids``) of the stream's width, which are
    valid as the producer encoded them: decoding each in full would cost the
    watcher more time than a busy machine gives it.
    """

    def __init__(
        self, settings: KafkaSettings, topics: Topics, width: int, producer_ids: str = ""
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._width = width
        self._producer_ids = producer_ids or None
        self.observed = Observed()
        self.pending: set[str] = set()  # valid points not predicted yet
        self.last_prediction_at = time.monotonic()
        self._next: dict[TopicPartition, int] = {}
        self._handlers: dict[str, Callable[[Any], None]] = {
            topics.points: self._point,
            topics.predictions: self._prediction,
            topics.deadletter: self._deadletter,
            topics.models: self._model,
        }
        self._consumer = self._open()
        self.partitions = sorted(self._next, key=lambda tp: (tp.topic, tp.partition))

    def _open(self) -> Any:
        consumer = make_consumer(self._settings, group_id=None)
        partitions = []
        for topic in self._handlers:
            found = consumer.partitions_for_topic(topic)
            if not found:
                consumer.close()
                raise BusError(f"topic {topic!r} does not exist; the run's topics were not made")
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        for tp in partitions:
            if tp in self._next:
                consumer.seek(tp, self._next[tp])
            else:
                consumer.seek_to_beginning(tp)
                self._next[tp] = 0
        return consumer

    def reopen(self) -> None:
        """Replace the consumer (after a broker fault), going on where the old one was."""
        try:
            self._consumer.close()
        except KafkaError as exc:
            log.debug("closing the old watcher consumer: %s", exc)
        self._consumer = self._open()

    def poll(self, timeout_s: float = 0.2) -> int:
        """Read what arrived; how many records."""
        try:
            polled = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        except KafkaError as exc:
            log.info("watcher poll failed (%s); retrying", exc)
            time.sleep(timeout_s)
            return 0
        count = 0
        for tp, records in polled.items():
            handle = self._handlers[tp.topic]
            for record in records:
                handle(record)
            if records:
                self._next[tp] = records[-1].offset + 1
                count += len(records)
        return count

    def behind(self) -> int:
        """Records on the topics (up to the last stable offset) not read yet."""
        end = self._consumer.end_offsets(self.partitions)
        return sum(max(0, end[tp] - self._consumer.position(tp)) for tp in self.partitions)

    def catch_up(self, timeout_s: float = 60.0) -> bool:
        """Read until every partition is read to its end; False if that took too long."""
        deadline = time.monotonic() + timeout_s
        moved_at = time.monotonic()
        reopened = False
        while time.monotonic() < deadline:
            try:
                if self.behind() == 0:
                    return True
            except KafkaError as exc:
                log.info("watcher could not read end offsets (%s); retrying", exc)
            if self.poll(0.5):
                moved_at = time.monotonic()
            elif time.monotonic() - moved_at > STUCK_S and not reopened:
                log.warning("the watcher's consumer is stuck; opening a new one")
                self.reopen()
                reopened = True
        return False

    def close(self) -> None:
        """Close the consumer."""
        try:
            self._consumer.close()
        except KafkaError as exc:
            log.debug("closing the watcher consumer: %s", exc)

    # --- one record of each topic ------------------------------------------------------

    def _point(self, record: Any) -> None:
        if self._producer_ids is not None and record.value is not None:
            try:
                shape = _POINT.decode(record.value)
            except msgspec.DecodeError:
                shape = None
            if (
                shape is not None
                and shape.id.startswith(self._producer_ids)
                and len(shape.x) == self._width
            ):
                self._valid(shape.id)
                return
        try:
            point = Point.from_bytes(record.value)
        except MessageError:
            self.observed.add_point(None, record.partition, record.offset)
            return
        if len(point.x) != self._width:
            self.observed.add_point(None, record.partition, record.offset)
            return
        self._valid(point.id)

    def _valid(self, point_id: str) -> None:
        self.observed.add_point(point_id)
        if point_id not in self.observed.predicted:
            self.pending.add(point_id)

    def _prediction(self, record: Any) -> None:
        try:
            shape = _PREDICTION.decode(record.value or b"")
        except msgspec.DecodeError:
            try:
                Prediction.from_bytes(record.value)
            except MessageError as exc:
                log.warning("a prediction that breaks the contract: %s", exc)
            return
        point_id = shape.id
        self.observed.add_prediction(
            point_id, record.partition, record.timestamp, (shape.model, shape.version)
        )
        self.pending.discard(point_id)
        self.last_prediction_at = time.monotonic()

    def _deadletter(self, record: Any) -> None:
        headers = {name: bytes(value or b"") for name, value in record.headers or ()}
        self.observed.deadletters.append(
            DeadLetter(
                service=headers.get("service", b"").decode(errors="replace"),
                error=headers.get("error", b"").decode(errors="replace"),
                source_topic=headers.get("source-topic", b"").decode(errors="replace"),
                value_digest=digest(record.value),
                key=record.key,
                source_partition=_integer(headers.get("source-partition")),
                source_offset=_integer(headers.get("source-offset")),
            )
        )

    def _model(self, record: Any) -> None:
        if record.value is None:
            return
        try:
            model = ModelVersion.from_bytes(record.value)
        except MessageError:
            self.observed.bad_models += 1
            return
        self.observed.models.append((record.timestamp, model.name, model.version))


def _integer(raw: bytes | None) -> int | None:
    """An ASCII integer header, or None."""
    try:
        return int(raw) if raw else None
    except ValueError:
        return None
