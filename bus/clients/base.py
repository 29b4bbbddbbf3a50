"""The one small interface every Kafka client driver implements.

Services, the stream kernel and the compacted-topic reader speak only these
types: `Record`, `Chunk`, `TopicPartition`, `Producer`, `Consumer` and the
error classes. A driver (``bus.clients.kafka_python``, ``bus.clients.confluent``,
``bus.clients.memory``) is the only place that imports a client library, and
the only place that may know its internals.

Error classes are what the kernel decides on:

- `TransientBusError`: the broker went away, a leader or coordinator moved, a
  request timed out, the coordinator aborted a transaction. Retry with backoff,
  redo the uncommitted batch.
- `FencedError`: another instance with the same transactional id (or group
  instance id) took over. Stop, with a clear message.
- `RecordTooLargeError`: one record cannot be written (too large for the broker).
  An error of that record only.
- `BusError` (the base): anything else the bus reports; fatal for a loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from core.errors import BusError

Headers = Sequence[tuple[str, bytes]]
# offsets, keys, values of the records of one chunk, in offset order
Columns = tuple[list[int], list[bytes | None], list[bytes | None]]


class TopicPartition(NamedTuple):
    """One partition of one topic (hashable, cheap, the same for every driver)."""

    topic: str
    partition: int


class Record:
    """One consumed record, the same whichever client read it.

    ``timestamp`` is epoch milliseconds (create or log-append time, as the topic
    stores it); ``headers`` keep their order and may repeat a name. Read-only by
    convention: a plain class with slots, because drivers build one per record
    and a frozen dataclass costs twice as much to construct.
    """

    __slots__ = ("headers", "key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(  # noqa: PLR0917 (positional: drivers call it once per record)
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp: int,
        headers: Headers = (),
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.timestamp = timestamp
        self.headers = headers

    def _fields(self) -> tuple[object, ...]:
        return (
            self.topic,
            self.partition,
            self.offset,
            self.key,
            self.value,
            self.timestamp,
            tuple(self.headers),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Record(topic={self.topic!r}, partition={self.partition}, offset={self.offset}, "
            f"key={self.key!r}, value={_short(self.value)}, timestamp={self.timestamp}, "
            f"headers={list(self.headers)!r})"
        )

    @property
    def tp(self) -> TopicPartition:
        """The record's partition."""
        return TopicPartition(self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``, or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


def _short(value: bytes | None, limit: int = 80) -> str:
    """``value``'s repr, cut after ``limit`` bytes (a record may hold a megabyte)."""
    if value is None or len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}...({len(value)} bytes)"


class Encoded(Protocol):
    """Records of one chunk that are still encoded; decoding may happen in another process."""

    def decode(self) -> Columns:
        """Offsets, keys and values of the records."""
        ...


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive records of one partition as columns (no per-record objects).

    ``payload`` is picklable (it may travel to a worker process): decoded columns,
    or a driver's still-encoded batches with a ``decode()`` method. ``next_offset``
    is the offset after the chunk's last record: what to commit once it is done.
    """

    topic: str
    partition: int
    next_offset: int
    payload: Columns | Encoded

    def columns(self) -> Columns:
        """Offsets, keys and values (decoded here if still encoded)."""
        payload = self.payload
        if isinstance(payload, tuple):
            return payload
        return payload.decode()


class TransientBusError(BusError):
    """A fault that passes: broker restart, leader or coordinator moved, timeout, aborted txn."""


class FencedError(BusError):
    """Another instance with the same transactional (or static member) id took over."""


class RecordTooLargeError(BusError):
    """One record is too large for the broker (or the client's request size)."""


RebalanceCallback = Callable[[list[TopicPartition]], None]


class Producer(ABC):
    """Writes records; optionally transactional. ``send`` never blocks on the network.

    Delivery is asynchronous: a failed delivery is raised (as one of the error
    classes above) by the next ``flush`` or ``commit_transaction``.
    """

    @abstractmethod
    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Queue one record (raises `RecordTooLargeError` at once when the client knows)."""

    @abstractmethod
    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until everything queued is acknowledged; raise the first failure since then."""

    @abstractmethod
    def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has (from the client's metadata)."""

    @abstractmethod
    def init_transactions(self) -> None:
        """Register the transactional id (fences older instances with the same id)."""

    @abstractmethod
    def begin_transaction(self) -> None:
        """Start a transaction."""

    @abstractmethod
    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group: object
    ) -> None:
        """Commit consumer offsets (the next offset to read) within the transaction (KIP-447).

        ``group`` is what `Consumer.group_metadata` returned, or a group id string.
        """

    @abstractmethod
    def commit_transaction(self) -> None:
        """Commit the transaction (flushes first)."""

    @abstractmethod
    def abort_transaction(self) -> None:
        """Abort the transaction; what it wrote is never visible to read_committed readers."""

    @abstractmethod
    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what can be flushed within ``timeout_s`` and release the client."""


class Consumer(ABC):
    """Reads records: group subscription or manual assignment, manual commits only."""

    @abstractmethod
    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        """Join the consumer group for ``topics``; callbacks run inside `poll`."""

    @abstractmethod
    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        """Read exactly these partitions (no group rebalancing)."""

    @abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads now."""

    @abstractmethod
    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        """Records of the assigned partitions, in offset order per partition (may be empty)."""

    def poll_chunks(self, timeout_s: float, max_records: int | None = None) -> list[Chunk]:
        """Like `poll`, as per-partition columns; drivers override it when they can do better."""
        chunks: list[Chunk] = []
        columns: dict[TopicPartition, Columns] = {}
        for record in self.poll(timeout_s, max_records):
            offsets, keys, values = columns.setdefault(record.tp, ([], [], []))
            offsets.append(record.offset)
            keys.append(record.key)
            values.append(record.value)
        for tp, cols in columns.items():
            chunks.append(Chunk(tp.topic, tp.partition, cols[0][-1] + 1, cols))
        return chunks

    @abstractmethod
    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` on."""

    @abstractmethod
    def seek_to_beginning(self, tps: Sequence[TopicPartition]) -> None:
        """Read these partitions from their first offset."""

    @abstractmethod
    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record `poll` returns for ``tp``."""

    @abstractmethod
    def commit(self, offsets: Mapping[TopicPartition, int], *, asynchronous: bool = False) -> None:
        """Commit the next offsets to read; a synchronous commit raises on failure."""

    @abstractmethod
    def committed(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing is committed)."""

    @abstractmethod
    def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after the last record of each partition (the last stable one)."""

    def lag(self, topics: Sequence[str]) -> dict[TopicPartition, int]:
        """The group's lag on ``topics``: records after its committed offset, per partition.

        Read as ``kafka-consumer-groups`` reads it (the committed offsets, then the end
        offsets); a partition with nothing committed counts from offset 0. Needs a
        ``group_id``; the consumer need not subscribe (nor join the group).
        """
        tps = [TopicPartition(topic, p) for topic in topics for p in self.partitions_for(topic)]
        if not tps:
            return {}
        committed = self.committed(tps)
        ends = self.end_offsets(tps)
        return {tp: max(0, ends.get(tp, 0) - (committed.get(tp) or 0)) for tp in tps}

    @abstractmethod
    def partitions_for(self, topic: str) -> list[int]:
        """The topic's partition ids from fresh metadata; empty when it does not exist."""

    @abstractmethod
    def group_metadata(self) -> object:
        """What `Producer.send_offsets_to_transaction` needs for this consumer's group."""

    @abstractmethod
    def close(self) -> None:
        """Leave the group (no commit) and release the client."""


class Driver(ABC):
    """Makes producers and consumers of one Kafka client library.

    Options are neutral names; each driver maps them to its library. Producer
    options: ``transactional_id``, ``linger_ms``, ``batch_size``, ``acks``,
    ``max_request_size``, ``transaction_timeout_ms``. Consumer options:
    ``group_id`` (None: manual assignment only), ``group_instance_id``,
    ``max_poll_records``, ``fetch_max_wait_ms``, ``read_committed`` (default True),
    ``auto_offset_reset`` (``earliest`` by default), ``session_timeout_ms``,
    ``heartbeat_interval_ms``. An unknown option is a `ConfigError`.
    """

    name: str

    @abstractmethod
    def producer(self, **options: Any) -> Producer:
        """A producer (idempotent, acks=all unless told otherwise)."""

    @abstractmethod
    def consumer(self, **options: Any) -> Consumer:
        """A consumer with manual commits and read_committed isolation by default."""
