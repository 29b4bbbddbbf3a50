"""An in-memory Kafka for unit tests: topics, groups, transactions and injected faults.

`MemoryBroker` holds topics (each partition a list of records with offsets and
timestamps), the committed offsets of consumer groups and the transactions of
transactional producers; `MemoryDriver` makes producers and consumers on it that
implement the whole `bus.clients.base` interface. It keeps Kafka's rules that
the stream kernel relies on:

- records of an open transaction are invisible to read_committed consumers (and
  hold back the partition's end offset) until the commit; an abort drops them;
  offsets sent to a transaction are committed with it;
- `init_transactions` with a transactional id fences the producer that had it
  (its open transaction is aborted, its next transactional call raises
  `FencedError`);
- a consumer group gives all subscribed partitions to its only member, or splits
  them round-robin between members; a join or leave starts a new generation, and
  each member sees its revoke and assign callbacks inside its next `poll`. A
  commit from an older generation fails (`TransientBusError`).

Faults are injected by operation name: ``broker.fail_next("commit_transaction",
TransientBusError("coordinator moved"))`` makes the next call of that operation,
by any client of the broker, raise the error instead. Non-transactional sends are
written at once (a failing `flush` does not take them back: at-least-once
delivery may repeat records). Never used outside unit tests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from bus.clients.base import (
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
from bus.clients.memory_broker import MemoryBroker, MemoryGroupMetadata, Transaction
from core.errors import BusError, ConfigError

__all__ = [
    "CONSUMER_OPTIONS",
    "PRODUCER_OPTIONS",
    "MemoryBroker",
    "MemoryConsumer",
    "MemoryDriver",
    "MemoryGroupMetadata",
    "MemoryProducer",
]

PRODUCER_OPTIONS = frozenset(
    {
        "transactional_id",
        "linger_ms",
        "batch_size",
        "acks",
        "max_request_size",
        "transaction_timeout_ms",
    }
)
CONSUMER_OPTIONS = frozenset(
    {
        "group_id",
        "group_instance_id",
        "max_poll_records",
        "fetch_max_wait_ms",
        "read_committed",
        "auto_offset_reset",
        "session_timeout_ms",
        "heartbeat_interval_ms",
    }
)
DEFAULT_MAX_REQUEST_SIZE = 4 * 1024 * 1024
DEFAULT_MAX_POLL_RECORDS = 500


class MemoryProducer(Producer):
    """A producer on a `MemoryBroker`; transactional when given a ``transactional_id``."""

    def __init__(self, broker: MemoryBroker, options: Mapping[str, Any]) -> None:
        self._broker = broker
        self._transactional_id: str | None = options.get("transactional_id")
        self._max_request_size = int(options.get("max_request_size", DEFAULT_MAX_REQUEST_SIZE))
        self._epoch: int | None = None
        self._txn: Transaction | None = None
        self._closed = False

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Write the record (inside the open transaction if transactional)."""
        broker = self._broker
        with broker.lock:
            broker.call("send")
            self._check_open()
            size = (
                len(value or b"") + len(key or b"") + sum(len(k) + len(v) for k, v in headers or ())
            )
            if size > self._max_request_size:
                raise RecordTooLargeError(
                    f"a record of {size} bytes to {topic!r} is over max_request_size "
                    f"{self._max_request_size}"
                )
            if self._transactional_id is not None:
                self._check_epoch()
                if self._txn is None:
                    raise BusError("send outside a transaction: call begin_transaction first")
            broker.append(topic, value, key, partition, headers=headers or (), txn=self._txn)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Nothing is buffered; raises an injected fault."""
        with self._broker.lock:
            self._broker.call("flush")
            self._check_open()

    def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has."""
        with self._broker.lock:
            self._broker.call("partition_count")
            return len(self._broker.partitions(topic))

    def init_transactions(self) -> None:
        """Take the transactional id (fencing its previous holder)."""
        broker = self._broker
        with broker.lock:
            broker.call("init_transactions")
            if self._transactional_id is None:
                raise BusError("init_transactions needs a producer with a transactional_id")
            self._epoch = broker.new_epoch(self._transactional_id)

    def begin_transaction(self) -> None:
        """Open a transaction."""
        broker = self._broker
        with broker.lock:
            broker.call("begin_transaction")
            self._check_epoch()
            if self._txn is not None:
                raise BusError("begin_transaction while a transaction is open")
            self._txn = Transaction()
            assert self._transactional_id is not None
            broker.opened(self._transactional_id, self._txn)

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group: object
    ) -> None:
        """Add consumer offsets to the open transaction (checked against the group's generation)."""
        broker = self._broker
        with broker.lock:
            broker.call("send_offsets_to_transaction")
            txn = self._current()
            if isinstance(group, MemoryGroupMetadata):
                current = broker.group(group.group_id)
                if (
                    current is not None
                    and current.members
                    and (current.generation != group.generation)
                ):
                    raise TransientBusError(
                        f"group {group.group_id!r} rebalanced (generation {group.generation} "
                        f"is now {current.generation})"
                    )
                group_id = group.group_id
            elif isinstance(group, str):
                group_id = group
            else:
                raise BusError(f"not a group: {group!r}")
            for tp, offset in offsets.items():
                txn.offsets[(group_id, TopicPartition(*tp))] = offset

    def commit_transaction(self) -> None:
        """Make the transaction's records visible and commit its offsets."""
        broker = self._broker
        with broker.lock:
            broker.call("commit_transaction")
            txn = self._current()
            txn.state = "committed"
            for (group_id, tp), offset in txn.offsets.items():
                broker.store_offsets(group_id, {tp: offset})
            self._txn = None
            assert self._transactional_id is not None
            broker.ended(self._transactional_id)

    def abort_transaction(self) -> None:
        """Drop the transaction's records and offsets."""
        broker = self._broker
        with broker.lock:
            broker.call("abort_transaction")
            txn = self._current()
            txn.state = "aborted"
            self._txn = None
            assert self._transactional_id is not None
            broker.ended(self._transactional_id)

    def close(self, timeout_s: float = 10.0) -> None:
        """Release the producer (an open transaction stays open until fenced or timed out)."""
        with self._broker.lock:
            self._broker.call("producer.close")
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the producer is closed")

    def _check_epoch(self) -> None:
        self._check_open()
        if self._transactional_id is None or self._epoch is None:
            raise BusError("transactions need a transactional_id and init_transactions first")
        if self._broker.epoch(self._transactional_id) != self._epoch:
            self._txn = None
            raise FencedError(
                f"producer fenced: another producer took transactional id "
                f"{self._transactional_id!r}"
            )

    def _current(self) -> Transaction:
        self._check_epoch()
        if self._txn is None:
            raise BusError("no transaction is open")
        return self._txn


class MemoryConsumer(Consumer):
    """A consumer on a `MemoryBroker`: group subscription or manual assignment."""

    def __init__(self, broker: MemoryBroker, options: Mapping[str, Any]) -> None:
        self._broker = broker
        self._group_id: str | None = options.get("group_id")
        self._max_poll_records = int(options.get("max_poll_records", DEFAULT_MAX_POLL_RECORDS))
        self._read_committed = bool(options.get("read_committed", True))
        reset = options.get("auto_offset_reset", "earliest")
        if reset not in ("earliest", "latest"):
            raise ConfigError(f"auto_offset_reset={reset!r}: expected earliest or latest")
        self._reset_latest = reset == "latest"
        self.subscription: set[str] = set()
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._generation = -1
        self._assigned: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._closed = False
        self._revoking = False
        self._start = 0

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        """Join the group; the assignment arrives with the next poll."""
        broker = self._broker
        with broker.lock:
            broker.call("subscribe")
            if self._group_id is None:
                raise ConfigError("subscribe needs a consumer with a group_id")
            self.subscription = set(topics)
            self._on_assign, self._on_revoke = on_assign, on_revoke
            broker.join(self._group_id, self)

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        """Read exactly ``partitions``, each from the group's committed offset (or the reset).

        Like confluent-kafka, and stricter than kafka-python, a new assignment
        forgets every position, also those of partitions assigned before.
        """
        with self._broker.lock:
            self._broker.call("assign")
            self._positions = {}
            self._assigned = {TopicPartition(*tp) for tp in partitions}

    def assignment(self) -> set[TopicPartition]:
        """The partitions read now."""
        with self._broker.lock:
            return set(self._assigned)

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        """Records from the positions on, read_committed unless told otherwise."""
        broker = self._broker
        deadline = time.monotonic() + timeout_s
        limit = max_records or self._max_poll_records
        with broker.lock:
            while True:
                broker.call("poll")
                self._check_open()
                self._rebalance()
                records = self._fetch(limit)
                left = deadline - time.monotonic()
                if records or left <= 0:
                    return records
                broker.lock.wait(left)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` on."""
        with self._broker.lock:
            self._broker.call("seek")
            self._owned(tp)
            self._positions[TopicPartition(*tp)] = offset

    def seek_to_beginning(self, tps: Sequence[TopicPartition]) -> None:
        """Read these partitions from offset 0."""
        with self._broker.lock:
            self._broker.call("seek_to_beginning")
            for tp in tps:
                self._owned(tp)
                self._positions[TopicPartition(*tp)] = 0

    def position(self, tp: TopicPartition) -> int:
        """The next offset to read from ``tp``."""
        with self._broker.lock:
            self._broker.call("position")
            self._owned(tp)
            return self._position(TopicPartition(*tp))

    def commit(self, offsets: Mapping[TopicPartition, int], *, asynchronous: bool = False) -> None:
        """Store the group's offsets (fails after a rebalance this member has not seen)."""
        broker = self._broker
        with broker.lock:
            broker.call("commit")
            self._check_open()
            if self._group_id is None:
                raise BusError("commit needs a consumer with a group_id")
            group = broker.group(self._group_id)
            stale = group is not None and group.generation != self._generation
            if self.subscription and stale and not self._revoking:
                raise TransientBusError(
                    f"commit failed: group {self._group_id!r} rebalanced; the records come again"
                )
            broker.store_offsets(self._group_id, offsets)

    def committed(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing is committed)."""
        broker = self._broker
        with broker.lock:
            broker.call("committed")
            stored = broker.stored_offsets(self._group_id or "")
            return {TopicPartition(*tp): stored.get(TopicPartition(*tp)) for tp in tps}

    def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after the last (stable, when read_committed) record."""
        broker = self._broker
        with broker.lock:
            broker.call("end_offsets")
            return {TopicPartition(*tp): broker.end(tp, self._read_committed) for tp in tps}

    def partitions_for(self, topic: str) -> list[int]:
        """The partition ids of ``topic`` (empty when it does not exist)."""
        with self._broker.lock:
            self._broker.call("partitions_for")
            return self._broker.partition_ids(topic)

    def group_metadata(self) -> object:
        """The group and this member's generation."""
        if self._group_id is None:
            raise BusError("group_metadata needs a consumer with a group_id")
        return MemoryGroupMetadata(self._group_id, self._generation)

    def close(self) -> None:
        """Leave the group."""
        with self._broker.lock:
            self._broker.call("consumer.close")
            if self._group_id is not None and self.subscription:
                self._broker.leave(self._group_id, self)
            self._closed = True

    # --- inside ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the consumer is closed")

    def _owned(self, tp: TopicPartition) -> None:
        if TopicPartition(*tp) not in self._assigned:
            raise BusError(f"{tp.topic}[{tp.partition}] is not assigned to this consumer")

    def _rebalance(self) -> None:
        """Run this member's revoke and assign callbacks if the group moved on."""
        if not self.subscription or self._group_id is None:
            return
        generation, mine = self._broker.share(self._group_id, self)
        if generation == self._generation and mine == self._assigned:
            return
        if self._assigned and self._on_revoke is not None:
            # as in Kafka, the revoke callback runs before the member rejoins: it may commit
            self._revoking = True
            try:
                self._on_revoke(sorted(self._assigned))
            finally:
                self._revoking = False
        self._generation = generation
        self._assigned = mine
        self._positions = {}
        if self._on_assign is not None:
            self._on_assign(sorted(mine))

    def _position(self, tp: TopicPartition) -> int:
        position = self._positions.get(tp)
        if position is None:
            stored = self._broker.stored_offsets(self._group_id or "").get(tp)
            if stored is not None:
                position = stored
            elif self._reset_latest:
                position = self._broker.end(tp, self._read_committed)
            else:
                position = 0
            self._positions[tp] = position
        return position

    def _fetch(self, limit: int) -> list[Record]:
        """Up to ``limit`` records from the assigned partitions, starting at a rotating one."""
        out: list[Record] = []
        tps = sorted(self._assigned)
        if not tps:
            return out
        self._start = (self._start + 1) % len(tps)
        for tp in tps[self._start :] + tps[: self._start]:
            entries = self._broker.partitions(tp.topic)[tp.partition]
            position = self._position(tp)
            while position < len(entries) and len(out) < limit:
                entry = entries[position]
                if entry.txn is not None and self._read_committed:
                    if entry.txn.state == "open":
                        break
                    if entry.txn.state == "aborted":
                        position += 1
                        continue
                out.append(entry.record)
                position += 1
            self._positions[tp] = position
        return out


class MemoryDriver(Driver):
    """Makes `MemoryProducer` and `MemoryConsumer` clients on one `MemoryBroker`."""

    name = "memory"

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    def producer(self, **options: Any) -> MemoryProducer:
        """A producer; transactional with ``transactional_id``."""
        _check_options(options, PRODUCER_OPTIONS)
        return MemoryProducer(self.broker, options)

    def consumer(self, **options: Any) -> MemoryConsumer:
        """A consumer; read_committed unless ``read_committed=False``."""
        _check_options(options, CONSUMER_OPTIONS)
        return MemoryConsumer(self.broker, options)


def _check_options(options: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown client option(s) {', '.join(unknown)}; known: {sorted(known)}")
