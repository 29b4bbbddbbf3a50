"""The kafka-python driver's producer: `bus.clients.base.Producer` on ``kafka.KafkaProducer``.

The producer keeps the future of every record sent since the last flush and
checks them at the next ``flush`` / ``commit_transaction``: a failed delivery
surfaces there, classified (`bus.clients.kafka_python_errors`). Commits and
aborts of transactions wait at most ``max_block_ms`` (kafka-python's own calls
would wait for ever while the broker is away); a retried commit waits for the
same commit. Transactions use kafka-python's transaction manager and sender
(internals, read with ``getattr``; the public calls are the fallback).

Sending stays kafka-python's own and costs about 30 µs a record of CPU; the
confluent driver is the one for high rates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from kafka import KafkaProducer
from kafka import errors as kafka_errors
from kafka.errors import KafkaError

from bus.clients.base import Headers, Producer, TopicPartition
from bus.clients.kafka_python_config import DEFAULT_TRANSACTION_TIMEOUT_MS, kafka_offsets
from bus.clients.kafka_python_errors import classify
from core.errors import StreamscoreError

log = logging.getLogger(__name__)


def _internal(obj: Any, name: str) -> Any:
    """One of kafka-python's internals (``name`` starts with ``_``; see the module doc)."""
    return getattr(obj, name)


def _set_internal(obj: Any, name: str, value: Any) -> None:
    """Replace one of kafka-python's internals on ``obj`` only."""
    setattr(obj, name, value)


class KafkaPythonProducer(Producer):
    """A `Producer` on ``kafka.KafkaProducer``."""

    def __init__(self, client: KafkaProducer, config: Mapping[str, Any]) -> None:
        self._config = dict(config)
        self._client = client
        self._send = client.send
        self._futures: list[Any] = []
        self._transactional_id = config.get("transactional_id")
        self._block_ms = int(client.config["max_block_ms"])
        self._txn_timeout_s = (
            config.get("transaction_timeout_ms") or DEFAULT_TRANSACTION_TIMEOUT_MS
        ) / 1000
        self._txn_started: float | None = None
        self._ending: tuple[bool, Any] | None = None  # a commit (True) or abort in progress
        self._failed = False  # a transactional call failed: close without waiting
        manager = getattr(client, "_transaction_manager", None)
        bump = getattr(manager, "_supports_epoch_bump", None)
        if self._transactional_id and manager is not None and callable(bump):
            # kafka-python recovers a transactional producer whose epoch went stale by
            # bumping it (KIP-360), falling back to a fresh producer id: that fences the
            # instance which took over. A stale epoch stays fatal here (see the module doc).
            _set_internal(manager, "_supports_epoch_bump", lambda: False)

    def _error(self, exc: BaseException, doing: str) -> StreamscoreError:
        if not self._transactional_id:
            return classify(exc, doing)
        self._failed = True
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
        if headers is not None and type(headers) is not list:
            headers = list(headers)
        try:
            self._futures.append(self._send(topic, value, key, headers, partition))
        except KafkaError as exc:
            raise self._error(exc, f"sending a record to {topic!r}") from exc

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until everything queued is acknowledged; raise the first failure since then."""
        try:
            self._client.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise self._error(exc, f"flushing the producer ({timeout_s:.0f}s)") from exc
        futures, self._futures = self._futures, []
        for future in futures:
            failure = future.exception
            if failure is not None:
                error = self._error(failure, "writing a record")
                self._renew_if_broken()
                raise error from failure

    def _renew_if_broken(self) -> None:
        """Replace a plain producer that kafka-python made unusable after one failed record.

        kafka-python treats any non-retriable error of an idempotent producer (a record
        the broker refused as too large, say) as fatal for the whole producer.
        """
        manager = getattr(self._client, "_transaction_manager", None)
        if self._transactional_id or manager is None or not manager.has_fatal_error():
            return
        log.info("kafka-python's producer failed for good after a record error; making a new one")
        self._client.close(timeout=0)
        try:
            self._client = KafkaProducer(**self._config)
        except KafkaError as exc:
            raise classify(exc, "making a new producer") from exc
        self._send = self._client.send

    def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has (waits for its metadata up to ``max_block_ms``)."""
        try:
            return len(self._client.partitions_for(topic))
        except KafkaError as exc:
            raise self._error(
                exc, f"reading the partitions of topic {topic!r} (does it exist?)"
            ) from exc

    def init_transactions(self) -> None:
        """Register the transactional id (fences older instances with the same id)."""
        try:
            self._client.init_transactions()
        except KafkaError as exc:
            raise self._error(exc, f"initialising transactions ({self._transactional_id})") from exc

    def begin_transaction(self) -> None:
        """Start a transaction."""
        try:
            self._client.begin_transaction()
        except KafkaError as exc:
            raise self._error(exc, "beginning a transaction") from exc
        self._txn_started = time.monotonic()

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group: object
    ) -> None:
        """Commit consumer offsets within the transaction (KIP-447 with group metadata)."""
        manager = getattr(self._client, "_transaction_manager", None)
        try:
            if manager is None or not hasattr(manager, "send_offsets_to_transaction"):
                self._client.send_offsets_to_transaction(kafka_offsets(offsets), group)
                return
            result = manager.send_offsets_to_transaction(kafka_offsets(offsets), group)
            _internal(self._client, "_sender").wakeup()
            if not result.wait(timeout_ms=self._block_ms):
                raise kafka_errors.KafkaTimeoutError(
                    f"offsets not added to the transaction within {self._block_ms} ms"
                )
        except KafkaError as exc:
            raise self._error(exc, "adding consumer offsets to the transaction") from exc

    def commit_transaction(self) -> None:
        """Commit the transaction (flushes first: a failed record fails the commit)."""
        self.flush(self._block_ms / 1000)
        self._end(commit=True)

    def abort_transaction(self) -> None:
        """Abort the transaction; what it wrote is never visible to read_committed readers."""
        self._futures = []  # their failures do not matter any more
        self._end(commit=False)

    def _end(self, *, commit: bool) -> None:
        doing = "committing the transaction" if commit else "aborting the transaction"
        manager = getattr(self._client, "_transaction_manager", None)
        sender = getattr(self._client, "_sender", None)
        try:
            if manager is None or sender is None or not hasattr(manager, "begin_commit"):
                if commit:
                    self._client.commit_transaction()
                else:
                    self._client.abort_transaction()
            else:
                if self._ending is None or self._ending[0] != commit:
                    result = manager.begin_commit() if commit else manager.begin_abort()
                    self._ending = (commit, result)
                    sender.wakeup()
                result = self._ending[1]
                try:
                    done = result.wait(timeout_ms=self._block_ms)
                except BaseException:
                    self._ending = None
                    raise
                if not done:
                    raise kafka_errors.KafkaTimeoutError(
                        f"no answer from the transaction coordinator within {self._block_ms} ms"
                    )
                self._ending = None
        except KafkaError as exc:
            raise self._error(exc, doing) from exc
        self._txn_started = None

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what can be flushed within ``timeout_s`` and release the client."""
        try:
            self._client.close(timeout=0 if self._failed else timeout_s)
        except KafkaError as exc:
            log.warning("closing the producer: %s", exc)
