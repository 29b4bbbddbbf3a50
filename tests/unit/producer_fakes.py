"""Doubles for the producer's unit tests: a clock, a recording producer, a stop flag."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bus.clients.base import Headers, Producer, TopicPartition, TransientBusError
from bus.messages import Point

__all__ = ["FakeClock", "FakeProducer", "Sent", "StopAfter"]


class FakeClock:
    """A clock that only moves when told to (or when the loop sleeps)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


@dataclass
class Sent:
    topic: str
    value: bytes
    key: bytes | None
    partition: int | None
    at: float


@dataclass(eq=False)
class FakeProducer(Producer):
    """Records what it is sent; the first flush after record ``fail_from`` was sent fails,
    and sends fail from record ``raise_from`` on."""

    clock: Callable[[], float] = lambda: 0.0
    partitions: int = 3
    fail_from: int | None = None
    raise_from: int | None = None
    sent: list[Sent] = field(default_factory=list)
    flushes: int = 0
    flushed: int = 0

    def partition_count(self, topic: str) -> int:
        return self.partitions

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        if self.raise_from is not None and len(self.sent) >= self.raise_from:
            raise TransientBusError("no metadata for the topic")
        assert value is not None
        self.sent.append(Sent(topic, value, key, partition, self.clock()))

    def flush(self, timeout_s: float = 30.0) -> None:
        self.flushes += 1
        before, self.flushed = self.flushed, len(self.sent)
        if self.fail_from is not None and before <= self.fail_from < self.flushed:
            raise TransientBusError("NotLeaderForPartition: the leader moved")

    def points(self) -> list[Point]:
        return [Point.from_bytes(s.value) for s in self.sent]

    def init_transactions(self) -> None:
        raise NotImplementedError

    def begin_transaction(self) -> None:
        raise NotImplementedError

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group: object
    ) -> None:
        raise NotImplementedError

    def commit_transaction(self) -> None:
        raise NotImplementedError

    def abort_transaction(self) -> None:
        raise NotImplementedError

    def close(self, timeout_s: float = 10.0) -> None:
        pass


class StopAfter:
    """A stop flag that is set once the producer has ``n`` records."""

    def __init__(self, producer: FakeProducer, n: int) -> None:
        self.producer = producer
        self.n = n

    def is_set(self) -> bool:
        return len(self.producer.sent) >= self.n

    def wait(self, timeout: float) -> bool:
        return self.is_set()
