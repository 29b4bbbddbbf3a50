"""When to publish (a pure policy) and the publishing itself (one Kafka transaction).

Every publication is ONE transaction holding the dead letters found since the
previous one, the new model versions, the checkpoint and the consumer offsets:
either all of it is visible to read_committed readers, or none of it. Between
publications nothing is committed, so a trainer that dies loses only work that
its successor redoes from the same offsets.

A transaction takes tens of milliseconds of waiting on the broker; the
`Publisher` runs it on a background thread while the loop keeps training. At
most one is in flight: when a publication falls due meanwhile, it waits and
then carries everything trained so far. At high rates versions therefore come
as fast as transactions complete, each covering at least ``every`` points.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError, ProducerFencedError
from kafka.structs import OffsetAndMetadata, TopicPartition

from bus.deadletter import DeadLetters
from streamscore.errors import BusError

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class PublishPolicy:
    """Decides when a publication is due; pure logic, the clock is passed in.

    Due when ``every`` labelled points were trained since the previous version;
    or when trained points, dead letters or just consumed offsets have waited
    ``interval_s`` since the first of them; or when ``max_deadletters`` dead
    letters wait (they are written inside the transaction).
    """

    def __init__(self, every: int, interval_s: float, max_deadletters: int = 1000) -> None:
        self.every = every
        self.interval_s = interval_s
        self.max_deadletters = max_deadletters
        self.new_points = 0
        self.deadletters = 0
        self.pending_since: float | None = None

    def note(self, *, points: int, deadletters: int, consumed: bool, now: float) -> None:
        """Record a processed batch: labelled points trained, dead letters, records read."""
        self.new_points += points
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
            or self.deadletters >= self.max_deadletters
            or now - self.pending_since >= self.interval_s
        )

    def published(self) -> None:
        """Everything noted so far is in a publication."""
        self.new_points = 0
        self.deadletters = 0
        self.pending_since = None


@dataclass
class Publication:
    """What one transaction writes and commits."""

    messages: list[tuple[str, bytes, bytes | None, Headers]] = field(default_factory=list)
    deadletters: list[tuple[ConsumerRecord, str]] = field(default_factory=list)
    offsets: dict[TopicPartition, OffsetAndMetadata] = field(default_factory=dict)
    versions: int = 0


class Publisher:
    """Runs publications, one at a time, as transactions of a transactional producer."""

    def __init__(
        self,
        producer: KafkaProducer,
        deadletters: DeadLetters,
        group_id: str,
        transactional_id: str = "",
    ) -> None:
        self._producer = producer
        self._transactional_id = transactional_id
        self._deadletters = deadletters
        self._group_id = group_id
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainer-publish")
        self._future: Future[Publication] | None = None
        self.transactions = 0

    @property
    def busy(self) -> bool:
        """True while a transaction is in flight."""
        return self._future is not None and not self._future.done()

    def submit(self, publication: Publication) -> None:
        """Start ``publication`` in the background (the previous one must be done)."""
        self.wait()
        self._future = self._executor.submit(self._transact, publication)

    def wait(self) -> Publication | None:
        """Wait for the transaction in flight; return what it published; BusError if it failed."""
        future, self._future = self._future, None
        if future is None:
            return None
        try:
            return future.result()
        except KafkaError as exc:
            if _fenced(exc):
                raise BusError(
                    f"another trainer started with transactional id {self._transactional_id!r} "
                    "and took over; this one stops (run one trainer per group at a time)"
                ) from exc
            raise BusError(
                f"a publication failed ({exc}); nothing of it was committed, and the next start "
                "resumes from the last checkpoint"
            ) from exc

    def check(self) -> None:
        """Re-raise the error of a finished transaction, if it failed."""
        if self._future is not None and self._future.done() and self._future.exception():
            self.wait()

    def _transact(self, publication: Publication) -> Publication:
        producer = self._producer
        producer.begin_transaction()
        try:
            for record, reason in publication.deadletters:
                self._deadletters.send(record, reason)
            for topic, key, value, headers in publication.messages:
                producer.send(topic, key=key, value=value, headers=headers)
            if publication.offsets:
                producer.send_offsets_to_transaction(publication.offsets, self._group_id)
            producer.commit_transaction()
        except BaseException:
            try:
                producer.abort_transaction()
            except Exception as exc:  # fenced or broken: the error that matters is raised
                log.debug("abort after a failed transaction failed too: %s", exc)
            raise
        self.transactions += 1
        return publication

    def close(self) -> None:
        """Stop the background thread (after the transaction in flight, if any)."""
        self._executor.shutdown(wait=True)


def _fenced(exc: BaseException) -> bool:
    """True for a fenced producer, also when kafka-python wraps it in a later send's error."""
    return any(isinstance(e, ProducerFencedError) for e in (exc, exc.__cause__, *exc.args))
