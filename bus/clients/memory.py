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

import itertools
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
from core.errors import BusError, ConfigError

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


@dataclass(eq=False)
class _Transaction:
    """One producer's open (then committed or aborted) transaction."""

    state: str = "open"  # open | committed | aborted
    offsets: dict[tuple[str, TopicPartition], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Entry:
    record: Record
    txn: _Transaction | None


@dataclass(frozen=True, slots=True)
class MemoryGroupMetadata:
    """What `MemoryConsumer.group_metadata` returns: the group and the member's generation."""

    group_id: str
    generation: int


@dataclass
class _Group:
    members: list[MemoryConsumer] = field(default_factory=list)
    generation: int = 0


class MemoryBroker:
    """Topics, committed offsets, transactions and injected faults, in memory, thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Condition(threading.RLock())
        self._logs: dict[str, list[list[_Entry]]] = {}
        self._committed: dict[str, dict[TopicPartition, int]] = {}
        self._groups: dict[str, _Group] = {}
        self._epochs: dict[str, int] = {}
        self._open: dict[str, _Transaction] = {}
        self._faults: dict[str, deque[BaseException]] = {}
        self._round_robin = itertools.count()
        self.calls: dict[str, int] = {}

    # --- for tests ---------------------------------------------------------------------

    def driver(self) -> MemoryDriver:
        """A driver whose clients live on this broker."""
        return MemoryDriver(self)

    def create_topic(self, name: str, partitions: int = 1) -> str:
        """Create ``name`` with ``partitions`` empty partitions (more if it exists); return it."""
        with self._lock:
            log = self._logs.setdefault(name, [])
            while len(log) < partitions:
                log.append([])
            self._lock.notify_all()
        return name

    def fail_next(self, operation: str, error: BaseException, times: int = 1) -> None:
        """Make the next ``times`` calls of ``operation`` (a method name) raise ``error``."""
        with self._lock:
            self._faults.setdefault(operation, deque()).extend([error] * times)

    def pending_faults(self, operation: str) -> int:
        """How many injected faults of ``operation`` have not fired yet."""
        with self._lock:
            return len(self._faults.get(operation, ()))

    def fence(self, transactional_id: str) -> None:
        """Do what a new instance with ``transactional_id`` does: fence the current one."""
        with self._lock:
            self._new_epoch(transactional_id)

    def produce(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers = (),
    ) -> Record:
        """Write one record at once (no producer, no transaction); return it."""
        with self._lock:
            return self._append(topic, value, key, partition, headers=headers, txn=None)

    def records(self, topic: str, *, committed_only: bool = True) -> list[Record]:
        """Every record of ``topic`` (committed ones only by default), partition by partition."""
        with self._lock:
            out: list[Record] = []
            for entries in self._logs.get(topic, []):
                for entry in entries:
                    if not committed_only or entry.txn is None or entry.txn.state == "committed":
                        out.append(entry.record)
            return out

    def committed_offsets(self, group: str) -> dict[TopicPartition, int]:
        """The offsets ``group`` has committed."""
        with self._lock:
            return dict(self._committed.get(group, {}))

    # --- for the clients ---------------------------------------------------------------

    def _call(self, operation: str) -> None:
        """Count the call and raise the fault injected for it, if any (under the lock)."""
        self.calls[operation] = self.calls.get(operation, 0) + 1
        faults = self._faults.get(operation)
        if faults:
            raise faults.popleft()

    def _partitions(self, topic: str) -> list[list[_Entry]]:
        log = self._logs.get(topic)
        if log is None:
            raise BusError(f"topic {topic!r} does not exist; create it first")
        return log

    def _append(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        *,
        headers: Headers,
        txn: _Transaction | None,
    ) -> Record:
        log = self._partitions(topic)
        if partition is None:
            if key is None:
                partition = next(self._round_robin) % len(log)
            else:
                partition = zlib.crc32(key) % len(log)
        if not 0 <= partition < len(log):
            raise BusError(f"{topic!r} has no partition {partition}")
        entries = log[partition]
        record = Record(
            topic,
            partition,
            len(entries),
            key,
            value,
            int(self._clock() * 1000),
            tuple(headers),
        )
        entries.append(_Entry(record, txn))
        self._lock.notify_all()
        return record

    def _new_epoch(self, transactional_id: str) -> int:
        epoch = self._epochs.get(transactional_id, 0) + 1
        self._epochs[transactional_id] = epoch
        txn = self._open.pop(transactional_id, None)
        if txn is not None:
            txn.state = "aborted"
        self._lock.notify_all()
        return epoch

    def _end(self, tp: TopicPartition, read_committed: bool) -> int:
        entries = self._partitions(tp.topic)[tp.partition]
        if read_committed:
            for entry in entries:
                if entry.txn is not None and entry.txn.state == "open":
                    return entry.record.offset
        return len(entries)

    def _join(self, group_id: str, member: MemoryConsumer) -> None:
        group = self._groups.setdefault(group_id, _Group())
        group.members.append(member)
        group.generation += 1

    def _leave(self, group_id: str, member: MemoryConsumer) -> None:
        group = self._groups.get(group_id)
        if group is not None and member in group.members:
            group.members.remove(member)
            group.generation += 1

    def _assignment(self, group_id: str, member: MemoryConsumer) -> tuple[int, set[TopicPartition]]:
        """The member's share of the group's partitions (round-robin) and the generation."""
        group = self._groups[group_id]
        topics = sorted({t for m in group.members for t in m.subscription})
        tps = [TopicPartition(t, p) for t in topics for p in range(len(self._logs.get(t, [])))]
        index = group.members.index(member)
        mine = {tp for i, tp in enumerate(tps) if i % len(group.members) == index}
        return group.generation, {tp for tp in mine if tp.topic in member.subscription}


class MemoryProducer(Producer):
    """A producer on a `MemoryBroker`; transactional when given a ``transactional_id``."""

    def __init__(self, broker: MemoryBroker, options: Mapping[str, Any]) -> None:
        self._broker = broker
        self._transactional_id: str | None = options.get("transactional_id")
        self._max_request_size = int(options.get("max_request_size", DEFAULT_MAX_REQUEST_SIZE))
        self._epoch: int | None = None
        self._txn: _Transaction | None = None
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
        with broker._lock:
            broker._call("send")
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
            broker._append(topic, value, key, partition, headers=headers or (), txn=self._txn)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Nothing is buffered; raises an injected fault."""
        with self._broker._lock:
            self._broker._call("flush")
            self._check_open()

    def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has."""
        with self._broker._lock:
            self._broker._call("partition_count")
            return len(self._broker._partitions(topic))

    def init_transactions(self) -> None:
        """Take the transactional id (fencing its previous holder)."""
        broker = self._broker
        with broker._lock:
            broker._call("init_transactions")
            if self._transactional_id is None:
                raise BusError("init_transactions needs a producer with a transactional_id")
            self._epoch = broker._new_epoch(self._transactional_id)

    def begin_transaction(self) -> None:
        """Open a transaction."""
        broker = self._broker
        with broker._lock:
            broker._call("begin_transaction")
            self._check_epoch()
            if self._txn is not None:
                raise BusError("begin_transaction while a transaction is open")
            self._txn = _Transaction()
            assert self._transactional_id is not None
            broker._open[self._transactional_id] = self._txn

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group: object
    ) -> None:
        """Add consumer offsets to the open transaction (checked against the group's generation)."""
        broker = self._broker
        with broker._lock:
            broker._call("send_offsets_to_transaction")
            txn = self._current()
            if isinstance(group, MemoryGroupMetadata):
                current = broker._groups.get(group.group_id)
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
        with broker._lock:
            broker._call("commit_transaction")
            txn = self._current()
            txn.state = "committed"
            for (group_id, tp), offset in txn.offsets.items():
                broker._committed.setdefault(group_id, {})[tp] = offset
            self._txn = None
            assert self._transactional_id is not None
            broker._open.pop(self._transactional_id, None)
            broker._lock.notify_all()

    def abort_transaction(self) -> None:
        """Drop the transaction's records and offsets."""
        broker = self._broker
        with broker._lock:
            broker._call("abort_transaction")
            txn = self._current()
            txn.state = "aborted"
            self._txn = None
            assert self._transactional_id is not None
            broker._open.pop(self._transactional_id, None)
            broker._lock.notify_all()

    def close(self, timeout_s: float = 10.0) -> None:
        """Release the producer (an open transaction stays open until fenced or timed out)."""
        with self._broker._lock:
            self._broker._call("producer.close")
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the producer is closed")

    def _check_epoch(self) -> None:
        self._check_open()
        if self._transactional_id is None or self._epoch is None:
            raise BusError("transactions need a transactional_id and init_transactions first")
        if self._broker._epochs.get(self._transactional_id) != self._epoch:
            self._txn = None
            raise FencedError(
                f"producer fenced: another producer took transactional id "
                f"{self._transactional_id!r}"
            )

    def _current(self) -> _Transaction:
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
        with broker._lock:
            broker._call("subscribe")
            if self._group_id is None:
                raise ConfigError("subscribe needs a consumer with a group_id")
            self.subscription = set(topics)
            self._on_assign, self._on_revoke = on_assign, on_revoke
            broker._join(self._group_id, self)

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        """Read exactly ``partitions``, each from the group's committed offset (or the reset).

        Like confluent-kafka, and stricter than kafka-python, a new assignment
        forgets every position, also those of partitions assigned before.
        """
        with self._broker._lock:
            self._broker._call("assign")
            self._positions = {}
            self._assigned = {TopicPartition(*tp) for tp in partitions}

    def assignment(self) -> set[TopicPartition]:
        """The partitions read now."""
        with self._broker._lock:
            return set(self._assigned)

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        """Records from the positions on, read_committed unless told otherwise."""
        broker = self._broker
        deadline = time.monotonic() + timeout_s
        limit = max_records or self._max_poll_records
        with broker._lock:
            while True:
                broker._call("poll")
                self._check_open()
                self._rebalance()
                records = self._fetch(limit)
                left = deadline - time.monotonic()
                if records or left <= 0:
                    return records
                broker._lock.wait(left)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` on."""
        with self._broker._lock:
            self._broker._call("seek")
            self._owned(tp)
            self._positions[TopicPartition(*tp)] = offset

    def seek_to_beginning(self, tps: Sequence[TopicPartition]) -> None:
        """Read these partitions from offset 0."""
        with self._broker._lock:
            self._broker._call("seek_to_beginning")
            for tp in tps:
                self._owned(tp)
                self._positions[TopicPartition(*tp)] = 0

    def position(self, tp: TopicPartition) -> int:
        """The next offset to read from ``tp``."""
        with self._broker._lock:
            self._broker._call("position")
            self._owned(tp)
            return self._position(TopicPartition(*tp))

    def commit(self, offsets: Mapping[TopicPartition, int], *, asynchronous: bool = False) -> None:
        """Store the group's offsets (fails after a rebalance this member has not seen)."""
        broker = self._broker
        with broker._lock:
            broker._call("commit")
            self._check_open()
            if self._group_id is None:
                raise BusError("commit needs a consumer with a group_id")
            group = broker._groups.get(self._group_id)
            stale = group is not None and group.generation != self._generation
            if self.subscription and stale and not self._revoking:
                raise TransientBusError(
                    f"commit failed: group {self._group_id!r} rebalanced; the records come again"
                )
            stored = broker._committed.setdefault(self._group_id, {})
            for tp, offset in offsets.items():
                stored[TopicPartition(*tp)] = offset

    def committed(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing is committed)."""
        broker = self._broker
        with broker._lock:
            broker._call("committed")
            stored = broker._committed.get(self._group_id or "", {})
            return {TopicPartition(*tp): stored.get(TopicPartition(*tp)) for tp in tps}

    def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after the last (stable, when read_committed) record."""
        broker = self._broker
        with broker._lock:
            broker._call("end_offsets")
            return {TopicPartition(*tp): broker._end(tp, self._read_committed) for tp in tps}

    def partitions_for(self, topic: str) -> list[int]:
        """The partition ids of ``topic`` (empty when it does not exist)."""
        with self._broker._lock:
            self._broker._call("partitions_for")
            return list(range(len(self._broker._logs.get(topic, []))))

    def group_metadata(self) -> object:
        """The group and this member's generation."""
        if self._group_id is None:
            raise BusError("group_metadata needs a consumer with a group_id")
        return MemoryGroupMetadata(self._group_id, self._generation)

    def close(self) -> None:
        """Leave the group."""
        with self._broker._lock:
            self._broker._call("consumer.close")
            if self._group_id is not None and self.subscription:
                self._broker._leave(self._group_id, self)
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
        generation, mine = self._broker._assignment(self._group_id, self)
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
            stored = self._broker._committed.get(self._group_id or "", {}).get(tp)
            if stored is not None:
                position = stored
            elif self._reset_latest:
                position = self._broker._end(tp, self._read_committed)
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
            entries = self._broker._partitions(tp.topic)[tp.partition]
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
