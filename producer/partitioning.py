"""Record keys and partitions of the points: chosen as Kafka's Java client chooses them.

A key's partition is ``murmur2(key) % n`` (the Java client's ``Utils.murmur2``), so
a key lands on the same partition whichever client library sends it; unkeyed
points go one partition per chunk, round-robin (like the sticky partitioner).
"""

from __future__ import annotations

from collections.abc import Callable

from bus.clients.base import Producer
from bus.messages import Point
from core.errors import BusError
from producer.sources import KeyedPoint

__all__ = [
    "PARTITIONS_REFRESH_S",
    "KeyFn",
    "Partitions",
    "entity_keys",
    "key_partition",
    "murmur2",
    "point_key",
]

#: How often the topic's partition count is read again (new partitions are used).
PARTITIONS_REFRESH_S = 10.0

KeyFn = Callable[[int, Point], str | None]


def point_key(_index: int, point: Point) -> str | None:
    """The key a point brings with it (``KeyedPoint.key``, e.g. a CSV ``key`` column)."""
    return point.key if isinstance(point, KeyedPoint) else None


def entity_keys(k: int, prefix: str = "entity-") -> KeyFn:
    """Keys ``entity-<i mod k>`` for the ``i``-th point of the run."""
    if k < 1:
        raise ValueError(f"expected at least 1 key, got {k}")
    names = [f"{prefix}{i}" for i in range(k)]

    def key(index: int, _point: Point) -> str | None:
        return names[index % k]

    return key


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` (the Java client's ``Utils.murmur2``), unsigned 32 bits."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    end = length & ~3
    for i in range(0, end, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's Java client (and kafka-python) gives ``key`` among ``partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Partitions:
    """Chooses partitions like Kafka's default partitioner, without its per-record cost.

    Keyed records go to ``murmur2(key) % n`` (the Java client's choice, cached per
    key); unkeyed records go to one partition per chunk, round-robin. The count
    of partitions is read again every `PARTITIONS_REFRESH_S` seconds.
    """

    def __init__(self, producer: Producer, topic: str, clock: Callable[[], float]) -> None:
        self._producer = producer
        self._topic = topic
        self._clock = clock
        self._count = 0
        self._by_key: dict[bytes, int] = {}
        self._turn = -1  # the first chunk goes to the first partition
        self._next_refresh = 0.0
        self.refresh()

    def refresh(self) -> None:
        """Re-read the topic's partition count when it is time to."""
        now = self._clock()
        if now < self._next_refresh:
            return
        self._next_refresh = now + PARTITIONS_REFRESH_S
        try:
            count = self._producer.partition_count(self._topic)
        except BusError as exc:
            raise BusError(
                f"cannot get the partitions of topic {self._topic!r}: {exc}; does it exist? "
                "(`streamscore topics` creates it)"
            ) from exc
        if count < 1:
            raise BusError(f"topic {self._topic!r} has no partitions (does it exist?)")
        if count != self._count:
            self._count = count
            self._by_key.clear()

    def next_sticky(self) -> int:
        """The partition for the next chunk of unkeyed records."""
        self._turn = (self._turn + 1) % self._count
        return self._turn

    def for_key(self, key: bytes) -> int:
        """The partition of ``key``."""
        partition = self._by_key.get(key)
        if partition is None:
            if len(self._by_key) >= 100_000:
                self._by_key.clear()
            partition = self._by_key[key] = key_partition(key, self._count)
        return partition
