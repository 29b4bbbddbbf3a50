"""The kafka-python driver: `bus.clients.base` on kafka-python (the default client).

Producers keep the future of every record sent since the last flush and check
them at the next ``flush`` / ``commit_transaction``: a failed delivery surfaces
there, classified. Commits and aborts of transactions wait at most
``max_block_ms`` (kafka-python's own calls would wait for ever while the broker
is away); a retried commit waits for the same commit.

Consumers read through `bus.clients.kafka_python_fetch` when this kafka-python
is the one it was written for: ``poll`` decodes raw record batches into `Record`s
in one tight loop, ``poll_chunks`` hands the batches out undecoded. Otherwise
(another version, internals changed) the library's own decoding is used, which
is about ten times slower, and that is logged once. Rebalance callbacks run while
``poll`` waits, on a worker thread (kafka-python calls listeners on its IO
thread, where a blocking call such as a commit on revoke is refused).

Sending stays kafka-python's own and costs about 30 µs a record of CPU; the
confluent driver is the one for high rates.

What kafka-python raises when the broker fails (found against a single Kafka 4.1
broker killed with SIGKILL and restarted, kafka-python 3.0.12), and what
`classify` makes of it:

- killed during a transaction, back within the transaction timeout: sends are
  retried and the commit succeeds once the broker is back (reconnecting within
  a second: kafka-python's own reconnect backoff grows to 30 s, long enough to
  time the commit out).
- ``commit_transaction`` while the broker is away: no answer; here a
  `TransientBusError` after ``max_block_ms``. That commit may never complete
  (a retried commit timed out again after the restart), and aborting then fails
  ("Invalid transition ... from state COMMITTING_TRANSACTION", `BusError`):
  make a new producer; its ``init_transactions`` aborts the old transaction.
- away longer than the transaction timeout: the coordinator aborts the
  transaction and bumps the producer epoch. The next record fails with
  ``InvalidProducerEpochError``; an abort or commit with ``ProducerFencedError``
  (kafka-python maps ``INVALID_PRODUCER_EPOCH`` to it), also wrapped in a later
  ``KafkaError`` ("Cannot execute transactional method because we are in an
  error state: ...").
- another producer with the same transactional id: exactly the same errors
  (Kafka 4.1 answers a fenced producer's records with ``INVALID_PRODUCER_EPOCH``;
  kafka-python never says ``ProducerFencedError`` then). Left alone, kafka-python
  "recovers" by bumping its epoch (KIP-360) and, when that is refused, by taking
  a fresh producer id for the same transactional id: it fences the instance
  that took over. The driver turns that recovery off for transactional
  producers, so a stale epoch stays fatal for the producer, and tells the two
  cases apart by time: a stale epoch or fence when the transaction has been open
  longer than its transaction timeout is the coordinator's abort
  (`TransientBusError`: make a new producer, redo the batch), otherwise another
  instance (`FencedError`).
- plain (idempotent) sends while the broker is away: retried; ``flush`` succeeds
  once it is back (or ``KafkaTimeoutError`` at its timeout: `TransientBusError`).
- consumer commits while the broker is away: ``KafkaTimeoutError``; after a
  rebalance ``CommitFailedError``: `TransientBusError`. Polls return nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka import errors as kafka_errors
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaConfigurationError, KafkaError
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KafkaTopicPartition

from bus.clients.base import (
    Chunk,
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
from bus.settings import KafkaSettings
from core.errors import BusError, ConfigError, StreamscoreError

log = logging.getLogger(__name__)


def _internal(obj: Any, name: str) -> Any:
    """One of kafka-python's internals (``name`` starts with ``_``; see the module doc)."""
    return getattr(obj, name)


def _set_internal(obj: Any, name: str, value: Any) -> None:
    """Replace one of kafka-python's internals on ``obj`` only."""
    setattr(obj, name, value)


PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 5,
    "batch_size": 256 * 1024,
    "max_request_size": 1024 * 1024,  # the broker's default limit: larger fails at send()
    "retries": 2**31 - 1,
    "enable_idempotence": True,
    "reconnect_backoff_max_ms": 1000,  # back soon after a broker restart (default: 30 s)
}

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "isolation_level": "read_committed",
    "max_poll_records": 5000,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "fetch_max_wait_ms": 100,
    "session_timeout_ms": 6_000,  # the broker's minimum: a dead member's partitions move soon
    "heartbeat_interval_ms": 1_500,
    "metadata_max_age_ms": 30_000,
    "reconnect_backoff_max_ms": 1000,
}

PRODUCER_OPTIONS = (
    "transactional_id",
    "linger_ms",
    "batch_size",
    "acks",
    "max_request_size",
    "transaction_timeout_ms",
)
CONSUMER_OPTIONS = (
    "group_id",
    "group_instance_id",
    "max_poll_records",
    "fetch_max_wait_ms",
    "read_committed",
    "auto_offset_reset",
    "session_timeout_ms",
    "heartbeat_interval_ms",
)
ACKS = {"all": "all", "-1": "all", -1: "all", "1": 1, 1: 1, "0": 0, 0: 0}
OFFSET_RESETS = ("earliest", "latest")
DEFAULT_TRANSACTION_TIMEOUT_MS = 60_000  # kafka-python's default

# Broker answers that mean "try again": the group or the transaction moved on, not us.
_TRANSIENT = (
    kafka_errors.RetriableError,
    kafka_errors.CommitFailedError,
    kafka_errors.RebalanceInProgressError,
    kafka_errors.IllegalGenerationError,
    kafka_errors.UnknownMemberIdError,
    kafka_errors.InvalidProducerEpochError,
    kafka_errors.UnknownProducerIdError,
    kafka_errors.OutOfOrderSequenceNumberError,
    kafka_errors.TransactionAbortedError,
    kafka_errors.TransactionAbortableError,
    kafka_errors.BrokerNotAvailableError,
    kafka_errors.NotControllerError,
)
_TOO_LARGE = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
)
_FENCED_NAMES = ("ProducerFencedError",)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``, what it was raised from, and exceptions carried in its args (a few levels)."""
    found: list[BaseException] = []
    todo = [exc]
    while todo and len(found) < 20:
        current = todo.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += [a for a in current.args if isinstance(a, BaseException)]
    return found


def classify(exc: BaseException, doing: str, *, txn_age_s: float | None = None,
             txn_timeout_s: float = float("inf")) -> StreamscoreError:  # fmt: skip
    """The streamscore error for a kafka-python error met while ``doing`` something.

    ``txn_age_s`` is given for a transactional producer: how long its transaction
    has been open. Then a stale producer epoch means fenced, by another instance
    within ``txn_timeout_s``, by the coordinator aborting the transaction after it
    (see the module doc). Chain the result to ``exc`` (``raise ... from exc``).
    """
    causes = _causes(exc)
    text = " ".join(str(e) for e in causes)
    if any(isinstance(e, kafka_errors.FencedInstanceIdError) for e in causes) or (
        "FencedInstanceIdError" in text
    ):
        return FencedError(
            f"{doing}: another consumer with the same group instance id joined the group "
            f"({exc}); stop this one (give every instance its own id)"
        )
    fenced = any(type(e).__name__ in _FENCED_NAMES for e in causes) or any(
        name in text for name in _FENCED_NAMES
    )
    if fenced or (txn_age_s is not None and "InvalidProducerEpochError" in text):
        if txn_age_s is not None and txn_age_s > txn_timeout_s:
            return TransientBusError(
                f"{doing}: the transaction was open {txn_age_s:.0f}s, longer than its "
                f"{txn_timeout_s:.0f}s timeout, and the coordinator aborted it ({exc}); "
                "make a new producer and redo the batch"
            )
        return FencedError(
            f"{doing}: another producer with the same transactional id started and took over "
            f"({exc}); stop this one (run one instance per transactional id)"
        )
    if any(isinstance(e, _TOO_LARGE) for e in causes):
        return RecordTooLargeError(
            f"{doing}: a record is larger than the broker or max_request_size accepts ({exc}); "
            "make it smaller or raise the limit"
        )
    if any(isinstance(e, KafkaConfigurationError) for e in causes):
        return ConfigError(f"{doing}: bad Kafka client setting ({exc}); fix the setting")
    if (
        any(isinstance(e, _TRANSIENT) for e in causes)
        or "TransactionAbortable" in text
        or "from state BUMPING_PRODUCER_EPOCH" in text  # recovering after an aborted transaction
    ):
        return TransientBusError(
            f"{doing}: the broker is unreachable, busy or moved on ({exc}); retry with backoff "
            "and redo what was not committed"
        )
    return BusError(f"{doing} failed ({exc}); check the broker, the topic and the settings")


def _unknown(options: Mapping[str, Any], known: Sequence[str], what: str) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown {what} option(s) {', '.join(unknown)}: expected some of {', '.join(known)}"
        )


def producer_config(settings: KafkaSettings, options: Mapping[str, Any]) -> dict[str, Any]:
    """kafka-python ``KafkaProducer`` arguments for the neutral ``options``."""
    _unknown(options, PRODUCER_OPTIONS, "producer")
    config = {**settings.client_kwargs(), **PRODUCER_DEFAULTS}
    for name, value in options.items():
        if value is not None:
            config[name] = value
    if "acks" in options:
        if options["acks"] not in ACKS:
            raise ConfigError(f"producer option acks={options['acks']!r}: expected all, 1 or 0")
        config["acks"] = ACKS[options["acks"]]
        if config["acks"] != "all":
            if options.get("transactional_id"):
                raise ConfigError("a transactional producer needs acks=all")
            config["enable_idempotence"] = False  # idempotence needs acks=all
    return config


def consumer_config(settings: KafkaSettings, options: Mapping[str, Any]) -> dict[str, Any]:
    """kafka-python ``KafkaConsumer`` arguments for the neutral ``options``."""
    _unknown(options, CONSUMER_OPTIONS, "consumer")
    config = {**settings.client_kwargs(), **CONSUMER_DEFAULTS, "group_id": None}
    for name, value in options.items():
        if value is None:
            continue
        if name == "read_committed":
            config["isolation_level"] = "read_committed" if value else "read_uncommitted"
        elif name == "auto_offset_reset" and value not in OFFSET_RESETS:
            raise ConfigError(
                f"consumer option auto_offset_reset={value!r}: expected earliest or latest"
            )
        else:
            config[name] = value
    if config.get("group_instance_id") and not config["group_id"]:
        raise ConfigError("consumer option group_instance_id needs a group_id")
    return config


class KafkaPythonDriver(Driver):
    """Producers and consumers on kafka-python."""

    name = "kafka-python"

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings

    def producer(self, **options: Any) -> KafkaPythonProducer:
        """A producer (idempotent, acks=all unless told otherwise)."""
        config = producer_config(self.settings, options)
        try:
            client = KafkaProducer(**config)
        except KafkaError as exc:
            raise connect_error(self.settings, exc) from exc
        return KafkaPythonProducer(client, config)

    def consumer(self, **options: Any) -> KafkaPythonConsumer:
        """A consumer with manual commits and read_committed isolation by default."""
        config = consumer_config(self.settings, options)
        try:
            client = KafkaConsumer(**config)
        except KafkaError as exc:
            raise connect_error(self.settings, exc) from exc
        return KafkaPythonConsumer(client, config)


def connect_error(settings: KafkaSettings, exc: KafkaError) -> StreamscoreError:
    """The error for a client that cannot be made (bad setting, or no broker answers)."""
    if isinstance(exc, KafkaConfigurationError):
        return ConfigError(f"bad Kafka client setting: {exc}")
    return BusError(
        f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}. "
        "Is the broker up? (`streamscore kafka up` starts a local one)"
    )


def _offsets(offsets: Mapping[TopicPartition, int]) -> dict[KafkaTopicPartition, OffsetAndMetadata]:
    return {
        KafkaTopicPartition(tp[0], tp[1]): OffsetAndMetadata(offset, "", -1)
        for tp, offset in offsets.items()
    }


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
                self._client.send_offsets_to_transaction(_offsets(offsets), group)
                return
            result = manager.send_offsets_to_transaction(_offsets(offsets), group)
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


class _Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Runs the caller's rebalance callbacks; keeps their first error for `poll` to raise.

    kafka-python calls listeners on its IO thread, where a blocking consumer call
    (a commit on revoke, a position or seek on assign) is refused. So each callback
    runs on a worker thread while the IO thread waits for it (heartbeats go on),
    and the caller's thread waits inside ``poll``: for the caller it runs inside poll.
    """

    def __init__(
        self, on_assign: RebalanceCallback | None, on_revoke: RebalanceCallback | None, net: Any
    ) -> None:
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.error: BaseException | None = None
        self._net = net

    async def _call(self, callback: RebalanceCallback | None, partitions: Any) -> None:
        if callback is None or self.error is not None or not partitions:
            return
        tps = sorted(TopicPartition(tp[0], tp[1]) for tp in partitions)
        done = threading.Event()

        def run() -> None:
            try:
                callback(tps)
            except BaseException as exc:  # raised again by poll, after the rebalance
                self.error = exc
            finally:
                done.set()

        threading.Thread(target=run, name="kafka-rebalance-callback", daemon=True).start()
        while not done.is_set():
            await self._net.sleep(0.002)

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._call(self.on_revoke, revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._call(self.on_assign, assigned)


class KafkaPythonConsumer(Consumer):
    """A `Consumer` on ``kafka.KafkaConsumer`` (fast batch decoding when possible)."""

    _fallback_logged = False

    def __init__(self, client: KafkaConsumer, config: Mapping[str, Any]) -> None:
        self._client = client
        self._group_id = config.get("group_id")
        self._timeout_ms = int(config.get("request_timeout_ms", 30_000))
        self._listener: _Listener | None = None
        self._raw: Any = None
        try:
            from bus.clients.kafka_python_fetch import install_raw_records

            installed = install_raw_records(client)
        except Exception as exc:  # an import or attribute of another kafka-python
            installed = f"{type(exc).__name__}: {exc}"
        if isinstance(installed, str):
            if not KafkaPythonConsumer._fallback_logged:
                KafkaPythonConsumer._fallback_logged = True
                log.info("kafka-python's own (slower) record decoding in use: %s", installed)
        else:
            self._raw = installed

    def _poll(self, timeout_s: float, max_records: int | None) -> dict[Any, list[Any]]:
        try:
            polled: dict[Any, list[Any]] = self._client.poll(
                timeout_ms=max(0, int(timeout_s * 1000)), max_records=max_records
            )
        except KafkaError as exc:
            raise classify(exc, "polling for records") from exc
        listener = self._listener
        if listener is not None and listener.error is not None:
            error, listener.error = listener.error, None
            raise error
        return polled

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        """Join the consumer group for ``topics``; callbacks run inside `poll`."""
        self._listener = _Listener(on_assign, on_revoke, _internal(self._client, "_net"))
        try:
            self._client.subscribe(list(topics), listener=self._listener)
            # Fresh metadata before the first join: a group joined before a new topic's
            # metadata came assigns nothing until the next refresh, and metadata that
            # changes after the join makes the group rebalance again.
            self._client.topics()
        except KafkaError as exc:
            raise classify(exc, f"subscribing to {', '.join(topics)}") from exc

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        """Read exactly these partitions (no group rebalancing)."""
        self._client.assign([KafkaTopicPartition(tp[0], tp[1]) for tp in partitions])

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads now."""
        return {TopicPartition(tp[0], tp[1]) for tp in self._client.assignment()}

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        """Records of the assigned partitions, in offset order per partition (may be empty)."""
        raw = self._raw
        if raw is not None:
            raw.chunk_mode = False
            polled = self._poll(timeout_s, max_records)
            if len(polled) == 1:
                for records in polled.values():
                    return records
            out: list[Record] = []
            for records in polled.values():
                out += records
            return out
        make = Record
        return [
            make(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, r.headers)
            for records in self._poll(timeout_s, max_records).values()
            for r in records
        ]

    def poll_chunks(self, timeout_s: float, max_records: int | None = None) -> list[Chunk]:
        """Per-partition chunks of still-encoded record batches (decoded where they are used)."""
        raw = self._raw
        if raw is None:
            return super().poll_chunks(timeout_s, max_records)
        from bus.clients.kafka_python_fetch import RawBatches

        raw.chunk_mode = True
        return [
            Chunk(tp[0], tp[1], batches[-1].next_offset, RawBatches(tuple(batches)))
            for tp, batches in self._poll(timeout_s, max_records).items()
            if batches
        ]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` on."""
        try:
            self._client.seek(KafkaTopicPartition(tp[0], tp[1]), offset)
        except KafkaError as exc:
            raise classify(exc, f"seeking {tp[0]}[{tp[1]}] to {offset}") from exc

    def seek_to_beginning(self, tps: Sequence[TopicPartition]) -> None:
        """Read these partitions from their first offset."""
        if not tps:
            return
        try:
            self._client.seek_to_beginning(*(KafkaTopicPartition(t, p) for t, p in tps))
        except KafkaError as exc:
            raise classify(exc, "seeking to the beginning") from exc

    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record `poll` returns for ``tp``."""
        try:
            offset = self._client.position(
                KafkaTopicPartition(tp[0], tp[1]), timeout_ms=self._timeout_ms
            )
        except KafkaError as exc:
            raise classify(exc, f"reading the position of {tp[0]}[{tp[1]}]") from exc
        if offset is None:
            raise TransientBusError(
                f"no position for {tp[0]}[{tp[1]}] within {self._timeout_ms} ms "
                "(no committed offset or offset reset answered); retry"
            )
        return int(offset)

    def commit(self, offsets: Mapping[TopicPartition, int], *, asynchronous: bool = False) -> None:
        """Commit the next offsets to read; a synchronous commit raises on failure."""
        if not offsets:
            return
        try:
            if asynchronous:
                self._client.commit_async(_offsets(offsets), callback=_log_async_commit)
            else:
                self._client.commit(_offsets(offsets), timeout_ms=self._timeout_ms)
        except KafkaError as exc:
            raise classify(exc, "committing offsets") from exc

    def committed(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing is committed)."""
        try:
            return {
                TopicPartition(t, p): self._client.committed(
                    KafkaTopicPartition(t, p), timeout_ms=self._timeout_ms
                )
                for t, p in tps
            }
        except KafkaError as exc:
            raise classify(exc, "reading committed offsets") from exc

    def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after the last record of each partition (the last stable one)."""
        if not tps:
            return {}
        try:
            ends = self._client.end_offsets(
                [KafkaTopicPartition(t, p) for t, p in tps], timeout_ms=self._timeout_ms
            )
        except KafkaError as exc:
            raise classify(exc, "reading end offsets") from exc
        return {TopicPartition(tp[0], tp[1]): int(offset) for tp, offset in ends.items()}

    def partitions_for(self, topic: str) -> list[int]:
        """The topic's partition ids from fresh metadata; empty when it does not exist."""
        try:
            self._client.topics()  # a metadata request: partitions_for_topic reads the cache
            return sorted(self._client.partitions_for_topic(topic) or ())
        except KafkaError as exc:
            raise classify(exc, f"reading the partitions of {topic!r}") from exc

    def group_metadata(self) -> object:
        """What `Producer.send_offsets_to_transaction` needs for this consumer's group."""
        return self._client.group_metadata()

    def close(self) -> None:
        """Leave the group (no commit) and release the client."""
        try:
            self._client.close(autocommit=False)
        except KafkaError as exc:
            log.warning("closing the consumer: %s", exc)


def _log_async_commit(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):
        log.warning(
            "an asynchronous offset commit failed (%s); the next commit covers it", response
        )


# --- plain clients, for tools that watch the bus from outside ------------------------


def make_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """A producer with the project's defaults (idempotent, acks=all, batched)."""
    try:
        return KafkaProducer(**{**settings.client_kwargs(), **PRODUCER_DEFAULTS, **overrides})
    except KafkaError as exc:
        raise connect_error(settings, exc) from exc


def make_consumer(
    settings: KafkaSettings,
    *topics: str,
    group_id: str | None,
    metadata_wait_s: float = 15.0,
    **overrides: Any,
) -> KafkaConsumer:
    """A consumer with manual commits and read_committed isolation.

    With ``topics`` it subscribes (consumer group) once their partitions are known:
    joining a group before the metadata of a just-created topic has arrived would
    leave the member without partitions until the next metadata refresh. Without
    ``topics`` the caller assigns partitions.
    """
    try:
        consumer = KafkaConsumer(
            **{**settings.client_kwargs(), **CONSUMER_DEFAULTS, "group_id": group_id, **overrides}
        )
    except KafkaError as exc:
        raise connect_error(settings, exc) from exc
    if topics:
        deadline = time.monotonic() + metadata_wait_s
        for topic in topics:
            while not consumer.partitions_for_topic(topic):
                if time.monotonic() > deadline:
                    consumer.close()
                    raise BusError(
                        f"topic {topic!r} does not exist on {settings.bootstrap_servers}; "
                        "create it with `streamscore topics`"
                    )
                time.sleep(0.1)
        consumer.subscribe(list(topics))
    return consumer
