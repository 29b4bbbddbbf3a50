"""The in-memory Kafka of `bus.clients.memory`: topics, groups, transactions, injected faults.

`MemoryBroker` is what the tests hold; its clients (`MemoryProducer`,
`MemoryConsumer`, in `bus.clients.memory`) call the methods of its "for the
clients" section, holding `MemoryBroker.lock`.
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bus.clients.base import Headers, Record, TopicPartition
from core.errors import BusError

if TYPE_CHECKING:
    from bus.clients.memory import MemoryConsumer, MemoryDriver


@dataclass(eq=False)
class Transaction:
    """One producer's open (then committed or aborted) transaction."""

    state: str = "open"  # open | committed | aborted
    offsets: dict[tuple[str, TopicPartition], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A record of a partition's log, and the transaction that wrote it (None: none)."""

    record: Record
    txn: Transaction | None


@dataclass(frozen=True, slots=True)
class MemoryGroupMetadata:
    """What `MemoryConsumer.group_metadata` returns: the group and the member's generation."""

    group_id: str
    generation: int


@dataclass
class ConsumerGroup:
    """A consumer group's members, in join order, and its generation."""

    members: list[MemoryConsumer] = field(default_factory=list)
    generation: int = 0


class MemoryBroker:
    """Topics, committed offsets, transactions and injected faults, in memory, thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        #: the broker-wide lock; clients hold it around each call (a Condition: polls wait on it)
        self.lock = threading.Condition(threading.RLock())
        self._logs: dict[str, list[list[LogEntry]]] = {}
        self._committed: dict[str, dict[TopicPartition, int]] = {}
        self._groups: dict[str, ConsumerGroup] = {}
        self._epochs: dict[str, int] = {}
        self._open: dict[str, Transaction] = {}
        self._faults: dict[str, deque[BaseException]] = {}
        self._round_robin = itertools.count()
        self.calls: dict[str, int] = {}

    # --- for tests ---------------------------------------------------------------------

    def driver(self) -> MemoryDriver:
        """A driver whose clients live on this broker."""
        from bus.clients.memory import MemoryDriver  # the clients' module imports this one

        return MemoryDriver(self)

    def create_topic(self, name: str, partitions: int = 1) -> str:
        """Create ``name`` with ``partitions`` empty partitions (more if it exists); return it."""
        with self.lock:
            log = self._logs.setdefault(name, [])
            while len(log) < partitions:
                log.append([])
            self.lock.notify_all()
        return name

    def fail_next(self, operation: str, error: BaseException, times: int = 1) -> None:
        """Make the next ``times`` calls of ``operation`` (a method name) raise ``error``."""
        with self.lock:
            self._faults.setdefault(operation, deque()).extend([error] * times)

    def pending_faults(self, operation: str) -> int:
        """How many injected faults of ``operation`` have not fired yet."""
        with self.lock:
            return len(self._faults.get(operation, ()))

    def fence(self, transactional_id: str) -> None:
        """Do what a new instance with ``transactional_id`` does: fence the current one."""
        with self.lock:
            self.new_epoch(transactional_id)

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
        with self.lock:
            return self.append(topic, value, key, partition, headers=headers, txn=None)

    def records(self, topic: str, *, committed_only: bool = True) -> list[Record]:
        """Every record of ``topic`` (committed ones only by default), partition by partition."""
        with self.lock:
            out: list[Record] = []
            for entries in self._logs.get(topic, []):
                for entry in entries:
                    if not committed_only or entry.txn is None or entry.txn.state == "committed":
                        out.append(entry.record)
            return out

    def committed_offsets(self, group: str) -> dict[TopicPartition, int]:
        """The offsets ``group`` has committed."""
        with self.lock:
            return dict(self._committed.get(group, {}))

    # --- for the clients (under the lock) ------------------------------------------------

    def call(self, operation: str) -> None:
        """Count the call and raise the fault injected for it, if any (under the lock)."""
        self.calls[operation] = self.calls.get(operation, 0) + 1
        faults = self._faults.get(operation)
        if faults:
            raise faults.popleft()

    def partition_ids(self, topic: str) -> list[int]:
        """The partition ids of ``topic`` (empty when it does not exist)."""
        return list(range(len(self._logs.get(topic, []))))

    def group(self, group_id: str) -> ConsumerGroup | None:
        """The consumer group ``group_id``, if a member ever joined it."""
        return self._groups.get(group_id)

    def stored_offsets(self, group_id: str) -> Mapping[TopicPartition, int]:
        """The offsets ``group_id`` has committed (live, not a copy)."""
        return self._committed.get(group_id, {})

    def store_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` for ``group_id``."""
        stored = self._committed.setdefault(group_id, {})
        for tp, offset in offsets.items():
            stored[TopicPartition(*tp)] = offset

    def epoch(self, transactional_id: str) -> int | None:
        """The current epoch of ``transactional_id`` (None: never initialised)."""
        return self._epochs.get(transactional_id)

    def opened(self, transactional_id: str, txn: Transaction) -> None:
        """Note ``txn`` as the open transaction of ``transactional_id``."""
        self._open[transactional_id] = txn

    def ended(self, transactional_id: str) -> None:
        """The open transaction of ``transactional_id`` is committed or aborted: wake waiters."""
        self._open.pop(transactional_id, None)
        self.lock.notify_all()

    def partitions(self, topic: str) -> list[list[LogEntry]]:
        log = self._logs.get(topic)
        if log is None:
            raise BusError(f"topic {topic!r} does not exist; create it first")
        return log

    def append(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        *,
        headers: Headers,
        txn: Transaction | None,
    ) -> Record:
        log = self.partitions(topic)
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
        entries.append(LogEntry(record, txn))
        self.lock.notify_all()
        return record

    def new_epoch(self, transactional_id: str) -> int:
        epoch = self._epochs.get(transactional_id, 0) + 1
        self._epochs[transactional_id] = epoch
        txn = self._open.pop(transactional_id, None)
        if txn is not None:
            txn.state = "aborted"
        self.lock.notify_all()
        return epoch

    def end(self, tp: TopicPartition, read_committed: bool) -> int:
        entries = self.partitions(tp.topic)[tp.partition]
        if read_committed:
            for entry in entries:
                if entry.txn is not None and entry.txn.state == "open":
                    return entry.record.offset
        return len(entries)

    def join(self, group_id: str, member: MemoryConsumer) -> None:
        group = self._groups.setdefault(group_id, ConsumerGroup())
        group.members.append(member)
        group.generation += 1

    def leave(self, group_id: str, member: MemoryConsumer) -> None:
        group = self._groups.get(group_id)
        if group is not None and member in group.members:
            group.members.remove(member)
            group.generation += 1

    def share(self, group_id: str, member: MemoryConsumer) -> tuple[int, set[TopicPartition]]:
        """The member's share of the group's partitions (round-robin) and the generation."""
        group = self._groups[group_id]
        topics = sorted({t for m in group.members for t in m.subscription})
        tps = [TopicPartition(t, p) for t in topics for p in range(len(self._logs.get(t, [])))]
        index = group.members.index(member)
        mine = {tp for i, tp in enumerate(tps) if i % len(group.members) == index}
        return group.generation, {tp for tp in mine if tp.topic in member.subscription}
