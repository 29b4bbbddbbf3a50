"""The confluent-kafka driver's producer: `bus.clients.base.Producer` on librdkafka.

Producers report deliveries only when they fail (``delivery.report.only.error``):
the callback keeps the error, and the next ``flush`` / ``commit_transaction``
raises it, classified. A full local queue (``BufferError``) is drained by serving
the client's callbacks, then the record is queued again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer as ConfluentConsumer  # type: ignore[import-untyped]
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Producer as ConfluentProducer
from confluent_kafka import TopicPartition as ConfluentTopicPartition

from bus.clients.base import Headers, Producer, TopicPartition, TransientBusError
from bus.clients.confluent_config import DEFAULT_TRANSACTION_TIMEOUT_MS
from bus.clients.confluent_errors import FATAL_CODE, classify, library_error, make_client
from bus.settings import KafkaSettings
from core.errors import BusError, StreamscoreError

__all__ = ["BLOCK_S", "ConfluentKafkaProducer"]

log = logging.getLogger(__name__)

BLOCK_S = 60.0  # the longest a transactional call waits for the broker


class ConfluentKafkaProducer(Producer):
    """A `Producer` on ``confluent_kafka.Producer``."""

    def __init__(self, settings: KafkaSettings, config: dict[str, Any]) -> None:
        self._settings = settings
        self._failures: list[KafkaError] = []
        self._fatal: KafkaError | None = None  # the cause of a fatal error, once told
        self._client = make_client(
            ConfluentProducer,
            settings,
            {**config, "on_delivery": self._on_delivery},
            on_fatal=self._note_fatal,
        )
        self._produce = self._client.produce
        self._transactional_id = config.get("transactional.id")
        self._txn_timeout_s = (
            config.get("transaction.timeout.ms") or DEFAULT_TRANSACTION_TIMEOUT_MS
        ) / 1000
        self._txn_started: float | None = None
        self._groups: dict[str, object] = {}

    def _on_delivery(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self._failures.append(error)

    def _note_fatal(self, error: KafkaError) -> None:
        self._fatal = error

    def _error(self, exc: BaseException | KafkaError, doing: str) -> StreamscoreError:
        error = library_error(exc)
        if error is not None and error.code() == FATAL_CODE:
            # "Fatal error" only: its cause (fenced by another instance, say) comes in the
            # error callback, which the next poll serves.
            if self._fatal is None:
                self._client.poll(0)
            if self._fatal is not None:
                exc = self._fatal
        if not self._transactional_id:
            return classify(exc, doing)
        age = 0.0 if self._txn_started is None else time.monotonic() - self._txn_started
        return classify(exc, doing, txn_age_s=age, txn_timeout_s=self._txn_timeout_s)

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Queue one record (raises `RecordTooLargeError` at once when it is over the limit)."""
        try:
            if headers is None:  # positional arguments only: the cheapest call
                self._produce(topic, value, key, -1 if partition is None else partition)
            else:
                if type(headers) is not list:
                    headers = list(headers)
                self._produce(
                    topic, value, key, -1 if partition is None else partition, headers=headers
                )
        except BufferError:
            self._wait_for_room(topic, value, key, partition, headers)
        except KafkaException as exc:
            raise self._error(exc, f"sending a record to {topic!r}") from exc

    def _wait_for_room(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        headers: Headers | None,
    ) -> None:
        """The local queue is full: let it drain (serving callbacks), then queue the record."""
        deadline = time.monotonic() + BLOCK_S
        while True:
            self._client.poll(0.05)
            try:
                self._produce(
                    topic, value, key, -1 if partition is None else partition, headers=headers
                )
                return
            except BufferError as exc:
                if time.monotonic() > deadline:
                    raise TransientBusError(
                        f"the producer's queue stayed full for {BLOCK_S:.0f}s (is the broker "
                        "reachable?); retry later"
                    ) from exc
            except KafkaException as exc:
                raise self._error(exc, f"sending a record to {topic!r}") from exc

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until everything queued is acknowledged; raise the first failure since then."""
        try:
            remaining = self._client.flush(timeout_s)
        except KafkaException as exc:
            raise self._error(exc, "flushing the producer") from exc
        self._raise_failures()
        if remaining:
            raise TransientBusError(
                f"{remaining} records were not acknowledged within {timeout_s:.0f}s "
                "(is the broker reachable?); retry"
            )

    def _raise_failures(self) -> None:
        if self._failures:
            error = self._failures[0]
            self._failures = []
            exc = KafkaException(error)
            raise self._error(exc, "writing a record") from exc

    def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has (from fresh metadata)."""
        try:
            metadata = self._client.list_topics(
                topic, timeout=self._settings.request_timeout_ms / 1000
            )
        except KafkaException as exc:
            raise self._error(exc, f"reading the partitions of topic {topic!r}") from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise BusError(
                f"topic {topic!r} does not exist on {self._settings.bootstrap_servers}; "
                "create it with `streamscore topics`"
            )
        return len(found.partitions)

    def init_transactions(self) -> None:
        """Register the transactional id (fences older instances with the same id)."""
        try:
            self._client.init_transactions(BLOCK_S)
        except KafkaException as exc:
            raise self._error(exc, f"initialising transactions ({self._transactional_id})") from exc

    def begin_transaction(self) -> None:
        """Start a transaction."""
        try:
            self._client.begin_transaction()
        except KafkaException as exc:
            raise self._error(exc, "beginning a transaction") from exc
        self._txn_started = time.monotonic()

    def _group_metadata(self, group: object) -> object:
        """librdkafka's group metadata for a group id: asked of a consumer of that group, once."""
        if not isinstance(group, str):
            return group
        if group not in self._groups:
            config = {**self._settings.librdkafka_config(), "group.id": group}
            consumer = make_client(ConfluentConsumer, self._settings, config)
            try:
                self._groups[group] = consumer.consumer_group_metadata()
            finally:
                consumer.close()
        return self._groups[group]

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group: object
    ) -> None:
        """Commit consumer offsets within the transaction (KIP-447 with group metadata)."""
        positions = [ConfluentTopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self._client.send_offsets_to_transaction(
                positions, self._group_metadata(group), BLOCK_S
            )
        except KafkaException as exc:
            raise self._error(exc, "adding consumer offsets to the transaction") from exc

    def commit_transaction(self) -> None:
        """Commit the transaction (flushes first: a failed record fails the commit)."""
        self.flush(BLOCK_S)
        try:
            self._client.commit_transaction(BLOCK_S)
        except KafkaException as exc:
            raise self._error(exc, "committing the transaction") from exc
        self._txn_started = None

    def abort_transaction(self) -> None:
        """Abort the transaction; what it wrote is never visible to read_committed readers."""
        self._failures = []  # records of the aborted transaction: their failures do not matter
        try:
            self._client.abort_transaction(BLOCK_S)
        except KafkaException as exc:
            raise self._error(exc, "aborting the transaction") from exc
        self._failures = []  # records purged by the abort
        self._txn_started = None

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what can be flushed within ``timeout_s`` and release the client."""
        try:
            remaining = self._client.flush(timeout_s)
        except KafkaException as exc:
            log.warning("closing the producer: %s", exc)
            return
        if remaining:
            log.warning("closing the producer with %d records not acknowledged", remaining)
