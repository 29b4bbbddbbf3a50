"""The confluent-kafka driver: `bus.clients.base` on librdkafka (``client=confluent``).

Producers report deliveries only when they fail (``delivery.report.only.error``):
the callback keeps the error, and the next ``flush`` / ``commit_transaction``
raises it, classified. A full local queue (``BufferError``) is drained by serving
the client's callbacks, then the record is queued again.

Consumers take what librdkafka has prefetched without waiting (``consume`` with
no timeout) and block only when nothing is there, for one message: a poll returns
as soon as there is something to return, like kafka-python's. Chunks are built
straight from the messages, column by column.

Positions: librdkafka's own position is the last record delivered + 1. Older
librdkafka releases leave it on the commit marker that ends a transaction, so a
reader of a topic written transactionally would never see its position reach
the end offset; and ``consume`` (2.16) moves it one past the offset of a
partition-EOF event, past the end. So the driver asks for partition-EOF events
(``enable.partition.eof``), which carry the offset the fetcher reached, and
`position` reports that offset until a record of the partition comes. Before
anything was read, librdkafka has no position at all; `position` then reports
where the next fetch starts (a seek, the committed offset, or the reset policy).

What librdkafka raises when the broker fails (found against a single Kafka 4.1
broker killed with SIGKILL and restarted, confluent-kafka 2.16), and what
`classify` makes of it:

- killed during a transaction, back within the transaction timeout: sends are
  retried and the commit succeeds once the broker is back.
- ``commit_transaction`` while the broker is away: ``_TIMED_OUT`` ("retry call
  to resume"): `TransientBusError`; the same commit retried after the restart
  succeeds.
- away longer than the transaction timeout: the coordinator aborts the
  transaction and bumps the producer epoch; librdkafka then reports the fatal
  ``_FENCED`` ("Producer attempted an operation with an old epoch ...
  transactional producer fenced by newer producer instance") on flush, commit
  and abort, and ``INVALID_PRODUCER_EPOCH`` for the records.
- another producer with the same transactional id: exactly the same errors.
  The driver tells the two apart by time: a stale epoch or fence when the
  transaction has been open longer than its transaction timeout is the
  coordinator's abort (`TransientBusError`: make a new producer, this one is
  unusable; redo the batch), otherwise another instance (`FencedError`).
- plain (idempotent) sends while the broker is away: retried; ``flush``
  succeeds once it is back.
- consumer commits while the broker is away: ``_WAIT_COORD``; right after the
  restart ``UNKNOWN_MEMBER_ID``; ``committed`` ``_TIMED_OUT``: `TransientBusError`.
  Polls return nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import (  # type: ignore[import-untyped]
    OFFSET_BEGINNING,
    KafkaError,
    KafkaException,
)
from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import Producer as ConfluentProducer
from confluent_kafka import TopicPartition as ConfluentTopicPartition

from bus.clients.base import (
    Chunk,
    Columns,
    Consumer,
    Driver,
    FencedError,
    Headers,
    Producer,
    RebalanceCallback,
    Record,
    RecordTooLargeError,
    TopicPartition,
    TransientBusError,
)
from bus.clients.confluent_config import (
    ACKS,
    CONSUMER_DEFAULTS,
    CONSUMER_OPTIONS,
    DEFAULT_TRANSACTION_TIMEOUT_MS,
    MAX_POLL_RECORDS,
    OFFSET_RESETS,
    PRODUCER_DEFAULTS,
    PRODUCER_OPTIONS,
    consumer_config,
    producer_config,
)
from bus.settings import KafkaSettings
from core.errors import BusError, ConfigError, StreamscoreError

__all__ = [
    "ACKS",
    "BLOCK_S",
    "CONSUMER_DEFAULTS",
    "CONSUMER_OPTIONS",
    "DEFAULT_TRANSACTION_TIMEOUT_MS",
    "MAX_POLL_RECORDS",
    "OFFSET_RESETS",
    "PRODUCER_DEFAULTS",
    "PRODUCER_OPTIONS",
    "ConfluentDriver",
    "ConfluentKafkaConsumer",
    "ConfluentKafkaProducer",
    "classify",
    "consumer_config",
    "producer_config",
]

log = logging.getLogger(__name__)
librdkafka_log = logging.getLogger(__name__ + ".librdkafka")

BLOCK_S = 60.0  # the longest a transactional call waits for the broker


def _codes(*names: str) -> tuple[int, ...]:
    """librdkafka's error codes by name (those of this release); local ones start with ``_``."""
    return tuple(getattr(KafkaError, name) for name in names if hasattr(KafkaError, name))


_FENCED_CODES = _codes("_FENCED", "PRODUCER_FENCED")
_TOO_LARGE_CODES = (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE)
_CONFIG_CODES = _codes("_INVALID_ARG", "INVALID_CONFIG")
_TRANSIENT_CODES = _codes(
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "_TIMED_OUT",
    "_MSG_TIMED_OUT",
    "_TIMED_OUT_QUEUE",
    "_WAIT_COORD",
    "_PURGE_QUEUE",
    "_PURGE_INFLIGHT",
    "_PREV_IN_PROGRESS",
    "_NO_OFFSET",
    "_ASSIGNMENT_LOST",
    "_MAX_POLL_EXCEEDED",
    "_UNKNOWN_PARTITION",
    "_OUTDATED",  # a seek overtaken by the client resetting positions (broker restart)
    "REQUEST_TIMED_OUT",
    "NETWORK_EXCEPTION",
    "NOT_COORDINATOR",
    "COORDINATOR_NOT_AVAILABLE",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "NOT_LEADER_FOR_PARTITION",
    "LEADER_NOT_AVAILABLE",
    "REBALANCE_IN_PROGRESS",
    "ILLEGAL_GENERATION",
    "UNKNOWN_MEMBER_ID",
    "CONCURRENT_TRANSACTIONS",
    "INVALID_PRODUCER_EPOCH",
    "UNKNOWN_PRODUCER_ID",
    "OUT_OF_ORDER_SEQUENCE_NUMBER",
    "TRANSACTION_ABORTABLE",
    "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "KAFKA_STORAGE_ERROR",
    "FENCED_LEADER_EPOCH",
    "UNKNOWN_LEADER_EPOCH",
    "STALE_MEMBER_EPOCH",
    "FENCED_MEMBER_EPOCH",
    "UNSTABLE_OFFSET_COMMIT",
)
# Errors a consumer reports as messages that mean "nothing to read here yet": logged, skipped.
_INFORMATIONAL_CODES = _codes(
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "UNKNOWN_TOPIC_OR_PART",
    "_UNKNOWN_PARTITION",
    "_UNKNOWN_TOPIC",
    "LEADER_NOT_AVAILABLE",
    "NOT_LEADER_FOR_PARTITION",
    "_MAX_POLL_EXCEEDED",
)
(_EOF,) = _codes("_PARTITION_EOF")
(_STATE,) = _codes("_STATE")  # an operation the client's state does not allow yet


def _library_error(exc: BaseException | KafkaError) -> KafkaError | None:
    if isinstance(exc, KafkaError):
        return exc
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def classify(exc: BaseException | KafkaError, doing: str, *, txn_age_s: float | None = None,
             txn_timeout_s: float = float("inf")) -> StreamscoreError:  # fmt: skip
    """The streamscore error for a confluent-kafka error met while ``doing`` something.

    ``txn_age_s`` is given for a transactional producer: how long its transaction
    has been open. Then a stale producer epoch means fenced, by another instance
    within ``txn_timeout_s``, by the coordinator aborting the transaction after it
    (see the module doc). Chain the result to the library's exception.
    """
    error = _library_error(exc)
    if error is None:
        return BusError(f"{doing} failed ({exc}); check the broker, the topic and the settings")
    code = error.code()
    what = f"{error.name()}: {error.str()}"
    if code == KafkaError.FENCED_INSTANCE_ID:
        return FencedError(
            f"{doing}: another consumer with the same group instance id joined the group "
            f"({what}); stop this one (give every instance its own id)"
        )
    if code in _FENCED_CODES or (
        txn_age_s is not None and code == KafkaError.INVALID_PRODUCER_EPOCH
    ):
        if txn_age_s is not None and txn_age_s > txn_timeout_s:
            return TransientBusError(
                f"{doing}: the transaction was open {txn_age_s:.0f}s, longer than its "
                f"{txn_timeout_s:.0f}s timeout, and the coordinator aborted it ({what}); "
                "make a new producer and redo the batch"
            )
        return FencedError(
            f"{doing}: another producer with the same transactional id started and took over "
            f"({what}); stop this one (run one instance per transactional id)"
        )
    if code in _TOO_LARGE_CODES:
        return RecordTooLargeError(
            f"{doing}: a record is larger than the broker or max_request_size accepts ({what}); "
            "make it smaller or raise the limit"
        )
    if code in _CONFIG_CODES:
        return ConfigError(f"{doing}: bad Kafka client setting ({what}); fix the setting")
    if code in _TRANSIENT_CODES or error.retriable() or error.txn_requires_abort():
        return TransientBusError(
            f"{doing}: the broker is unreachable, busy or moved on ({what}); retry with backoff "
            "and redo what was not committed"
        )
    if error.fatal():
        return BusError(
            f"{doing}: the client hit a fatal error ({what}); this producer cannot be used "
            "any more: make a new one"
        )
    return BusError(f"{doing} failed ({what}); check the broker, the topic and the settings")


def _client_callbacks(config: dict[str, Any]) -> dict[str, Any]:
    """Route librdkafka's logs and global errors through Python logging (redacted there)."""
    config["logger"] = librdkafka_log
    config["error_cb"] = _log_client_error
    return config


def _log_client_error(error: KafkaError) -> None:
    if error.fatal():
        log.error("Kafka client fatal error: %s", error.str())
    else:
        log.debug("Kafka client error (retried by the client): %s", error.str())


class ConfluentDriver(Driver):
    """Producers and consumers on confluent-kafka (librdkafka)."""

    name = "confluent"

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings

    def producer(self, **options: Any) -> ConfluentKafkaProducer:
        """A producer (idempotent, acks=all unless told otherwise)."""
        config = producer_config(self.settings, options)
        producer = ConfluentKafkaProducer(self.settings, config)
        return producer

    def consumer(self, **options: Any) -> ConfluentKafkaConsumer:
        """A consumer with manual commits and read_committed isolation by default."""
        joined = options.get("group_id") is not None
        max_records = options.get("max_poll_records") or MAX_POLL_RECORDS
        config = consumer_config(self.settings, options)
        return ConfluentKafkaConsumer(self.settings, config, joined=joined, max_records=max_records)


def _make(kind: type[Any], settings: KafkaSettings, config: dict[str, Any]) -> Any:
    try:
        return kind(_client_callbacks(dict(config)))
    except KafkaException as exc:
        raise classify(exc, f"creating a Kafka client for {settings.bootstrap_servers}") from exc


class ConfluentKafkaProducer(Producer):
    """A `Producer` on ``confluent_kafka.Producer``."""

    def __init__(self, settings: KafkaSettings, config: dict[str, Any]) -> None:
        self._settings = settings
        self._failures: list[KafkaError] = []
        self._client = _make(
            ConfluentProducer, settings, {**config, "on_delivery": self._on_delivery}
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

    def _error(self, exc: BaseException | KafkaError, doing: str) -> StreamscoreError:
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
            consumer = _make(ConfluentConsumer, self._settings, config)
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


def _ours(partitions: Sequence[Any]) -> list[TopicPartition]:
    return sorted(TopicPartition(tp.topic, tp.partition) for tp in partitions)


class ConfluentKafkaConsumer(Consumer):
    """A `Consumer` on ``confluent_kafka.Consumer``."""

    def __init__(
        self, settings: KafkaSettings, config: dict[str, Any], *, joined: bool, max_records: int
    ) -> None:
        self._settings = settings
        self._joined = joined
        self._max_records = max_records
        self._earliest = config.get("auto.offset.reset") == "earliest"
        self._timeout_s = settings.request_timeout_ms / 1000
        # Positions librdkafka does not report right: the end a partition's fetch reached
        # (past a final commit marker), or a seek; dropped when a record of it comes.
        self._known: dict[tuple[str, int], int] = {}
        self._assigning: dict[tuple[str, int], Any] | None = None  # inside on_assign
        self._callback_error: BaseException | None = None
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._client = _make(
            ConfluentConsumer, settings, {**config, "on_commit": _log_async_commit}
        )

    # --- polling --------------------------------------------------------------------

    def _messages(self, timeout_s: float, max_records: int | None) -> list[Any]:
        """What librdkafka has ready, waiting up to ``timeout_s`` for the first one."""
        n = max_records or self._max_records
        client = self._client
        try:
            messages: list[Any] = client.consume(n, 0)
            if not messages and timeout_s > 0:
                first = client.poll(timeout_s)
                if first is not None:
                    messages = [first]
                    if n > 1:
                        messages += client.consume(n - 1, 0)
        except KafkaException as exc:
            raise classify(exc, "polling for records") from exc
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error
        return messages

    def _message_error(self, message: Any) -> None:
        """An event in the stream: a partition's end (kept for `position`), or an error."""
        error = message.error()
        if error.code() == _EOF:
            self._known[(message.topic(), message.partition())] = message.offset()
            return
        if error.code() in _INFORMATIONAL_CODES:
            log.debug("consumer: %s (retried by the client)", error.str())
            return
        exc = KafkaException(error)
        raise classify(exc, "polling for records") from exc

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        """Records of the assigned partitions, in offset order per partition (may be empty)."""
        messages = self._messages(timeout_s, max_records)
        known = self._known
        out: list[Record] = []
        add = out.append
        for m in messages:
            if m.error() is not None:
                self._message_error(m)
                continue
            if known:
                known.pop((m.topic(), m.partition()), None)
            add(
                Record(
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    m.key(),
                    m.value(),
                    m.timestamp()[1],
                    m.headers() or (),
                )
            )
        return out

    def poll_chunks(self, timeout_s: float, max_records: int | None = None) -> list[Chunk]:
        """Per-partition columns built straight from the messages (no `Record` objects)."""
        messages = self._messages(timeout_s, max_records)
        known = self._known
        columns: dict[tuple[str, int], Columns] = {}
        topic: str | None = None
        partition = -1
        offsets: list[int] = []
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        for m in messages:
            if m.error() is not None:
                self._message_error(m)
                continue
            p = m.partition()
            t = m.topic()
            if known:
                known.pop((t, p), None)
            if p != partition or t != topic:
                topic, partition = t, p
                offsets, keys, values = columns.setdefault((t, p), ([], [], []))
            offsets.append(m.offset())
            keys.append(m.key())
            values.append(m.value())
        return [Chunk(t, p, cols[0][-1] + 1, cols) for (t, p), cols in columns.items() if cols[0]]

    # --- assignment ---------------------------------------------------------------

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        """Run on_assign, then assign (at the offsets it seeked to: librdkafka cannot seek yet)."""
        for tp in partitions:
            self._forget((tp.topic, tp.partition))
        self._assigning = {(tp.topic, tp.partition): tp for tp in partitions}
        try:
            self._callback(self._on_assign, partitions)
        finally:
            starts, self._assigning = self._assigning, None
        self._client.assign(list(starts.values()))

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        self._callback(self._on_revoke, partitions)
        for tp in partitions:
            self._forget((tp.topic, tp.partition))

    def _callback(self, callback: RebalanceCallback | None, partitions: list[Any]) -> None:
        if callback is None or self._callback_error is not None or not partitions:
            return
        try:
            callback(_ours(partitions))
        except BaseException as exc:  # raised again by poll, after the rebalance
            self._callback_error = exc

    def _forget(self, key: tuple[str, int]) -> None:
        self._known.pop(key, None)

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        """Join the consumer group for ``topics``; callbacks run inside `poll`."""
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        try:
            self._client.subscribe(
                list(topics), on_assign=self._assigned, on_revoke=self._revoked,
                on_lost=self._revoked,
            )  # fmt: skip
        except KafkaException as exc:
            raise classify(exc, f"subscribing to {', '.join(topics)}") from exc

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        """Read exactly these partitions (no group rebalancing)."""
        self._known.clear()
        try:
            self._client.assign([ConfluentTopicPartition(t, p) for t, p in partitions])
        except KafkaException as exc:
            raise classify(exc, "assigning partitions") from exc

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads now."""
        return {TopicPartition(tp.topic, tp.partition) for tp in self._client.assignment()}

    # --- positions --------------------------------------------------------------------

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` on."""
        topic, partition = tp
        key = (topic, partition)
        self._forget(key)
        if self._assigning is not None and key in self._assigning:
            self._assigning[key] = ConfluentTopicPartition(topic, partition, offset)
            self._known[key] = offset
            return
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                self._client.seek(ConfluentTopicPartition(topic, partition, offset))
                break
            except KafkaException as exc:
                error = _library_error(exc)
                if error is None or error.code() != _STATE:
                    raise classify(exc, f"seeking {topic}[{partition}] to {offset}") from exc
                # the partition does not fetch yet (just assigned)
                if not self._joined:  # a manual assignment: start it there instead
                    self._client.incremental_unassign([ConfluentTopicPartition(topic, partition)])
                    self._client.incremental_assign(
                        [ConfluentTopicPartition(topic, partition, offset)]
                    )
                    break
                if time.monotonic() > deadline:
                    raise classify(exc, f"seeking {topic}[{partition}] to {offset}") from exc
                time.sleep(0.01)
        self._known[key] = offset

    def seek_to_beginning(self, tps: Sequence[TopicPartition]) -> None:
        """Read these partitions from their first offset."""
        for tp in tps:
            self.seek(tp, OFFSET_BEGINNING)

    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record `poll` returns for ``tp`` (past a final commit marker)."""
        topic, partition = tp
        known = self._known.get((topic, partition))
        if known is not None and known >= 0:
            return known
        if known is None:
            try:
                (found,) = self._client.position([ConfluentTopicPartition(topic, partition)])
            except KafkaException as exc:
                raise classify(exc, f"reading the position of {topic}[{partition}]") from exc
            if found.offset >= 0:
                return int(found.offset)
        return self._start_offset(tp, known)

    def _start_offset(self, tp: TopicPartition, seeked: int | None) -> int:
        """Where the next fetch of a partition nothing was read from starts."""
        if seeked is None and self._joined:
            committed = self.committed([tp])[tp]
            if committed is not None:
                return committed
        low, high = self._watermarks(tp)
        earliest = self._earliest if seeked is None else seeked == OFFSET_BEGINNING
        return low if earliest else high

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        try:
            found = self._client.get_watermark_offsets(
                ConfluentTopicPartition(tp[0], tp[1]), timeout=self._timeout_s
            )
        except KafkaException as exc:
            raise classify(exc, f"reading the offsets of {tp[0]}[{tp[1]}]") from exc
        if found is None:
            raise TransientBusError(
                f"no answer for the offsets of {tp[0]}[{tp[1]}] within {self._timeout_s:.0f}s; "
                "retry"
            )
        return int(found[0]), int(found[1])

    def commit(self, offsets: Mapping[TopicPartition, int], *, asynchronous: bool = False) -> None:
        """Commit the next offsets to read; a synchronous commit raises on failure."""
        if not offsets:
            return
        if not self._joined:
            raise BusError("this consumer has no group_id: it cannot commit offsets")
        positions = [ConfluentTopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            if asynchronous:
                self._client.commit(offsets=positions, asynchronous=True)
                return
            results = self._client.commit(offsets=positions, asynchronous=False)
        except KafkaException as exc:
            raise classify(exc, "committing offsets") from exc
        for result in results or ():
            if result.error is not None:
                failure = KafkaException(result.error)
                raise classify(failure, f"committing the offset of {result.topic}") from failure

    def committed(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing is committed)."""
        if not tps:
            return {}
        try:
            found = self._client.committed(
                [ConfluentTopicPartition(t, p) for t, p in tps], timeout=self._timeout_s
            )
        except KafkaException as exc:
            raise classify(exc, "reading committed offsets") from exc
        return {
            TopicPartition(f.topic, f.partition): (int(f.offset) if f.offset >= 0 else None)
            for f in found
        }

    def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after the last record of each partition (the last stable one)."""
        return {TopicPartition(tp[0], tp[1]): self._watermarks(tp)[1] for tp in tps}

    def partitions_for(self, topic: str) -> list[int]:
        """The topic's partition ids from fresh metadata; empty when it does not exist."""
        try:
            metadata = self._client.list_topics(topic, timeout=self._timeout_s)
        except KafkaException as exc:
            raise classify(exc, f"reading the partitions of {topic!r}") from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return []
        return sorted(found.partitions)

    def group_metadata(self) -> object:
        """What `Producer.send_offsets_to_transaction` needs for this consumer's group."""
        return self._client.consumer_group_metadata()

    def close(self) -> None:
        """Leave the group (no commit) and release the client."""
        try:
            self._client.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing the consumer: %s", exc)


def _log_async_commit(error: KafkaError | None, partitions: Any) -> None:
    if error is not None:
        log.warning("an offset commit failed (%s); the next commit covers it", error.str())
