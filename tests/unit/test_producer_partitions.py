"""The producer's keys and partitions: Kafka's murmur2, sticky chunks, refreshed counts."""

from __future__ import annotations

import pytest

from bus.messages import Point
from producer import partitioning
from producer.loop import (
    entity_keys,
    key_partition,
    murmur2,
    point_key,
    publish,
)
from producer.sources import DummySource, KeyedPoint
from tests.unit.producer_fakes import FakeClock, FakeProducer


def test_unkeyed_points_go_to_one_partition_per_chunk_round_robin() -> None:
    producer = FakeProducer(partitions=4)
    publish(DummySource(), producer, "t", count=5000, chunk=500)
    assert all(s.key is None for s in producer.sent)
    per_chunk = [{s.partition for s in producer.sent[i : i + 500]} for i in range(0, 5000, 500)]
    assert all(len(parts) == 1 for parts in per_chunk)
    assert [parts.pop() for parts in per_chunk] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_entity_keys_cycle_and_each_key_keeps_its_partition() -> None:
    producer = FakeProducer(partitions=6)
    publish(DummySource(), producer, "t", count=3000, keys=entity_keys(7))
    keys = [s.key for s in producer.sent]
    assert keys[:8] == [f"entity-{i}".encode() for i in range(7)] + [b"entity-0"]
    partition_of: dict[bytes | None, set[int | None]] = {}
    for s in producer.sent:
        partition_of.setdefault(s.key, set()).add(s.partition)
    assert len(partition_of) == 7
    assert all(len(parts) == 1 for parts in partition_of.values())
    assert len({p for parts in partition_of.values() for p in parts}) > 1
    # the Java client's (and kafka-python's) default partitioner would choose the same
    for key, parts in partition_of.items():
        assert key is not None
        assert parts == {(murmur2(key) & 0x7FFFFFFF) % 6} == {key_partition(key, 6)}


# Kafka's own test vectors for Utils.murmur2 (signed 32-bit results in Java).
MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "java"), MURMUR2.items())
def test_murmur2_is_kafkas(key: bytes, java: int) -> None:
    assert murmur2(key) == java & 0xFFFFFFFF
    assert key_partition(key, 7) == (java & 0x7FFFFFFF) % 7


def test_new_partitions_are_used_after_a_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    producer = FakeProducer(clock=clock, partitions=2)
    monkeypatch.setattr(partitioning, "PARTITIONS_REFRESH_S", 5.0)

    class Grows(FakeProducer):
        def partition_count(self, topic: str) -> int:
            return 2 if clock.now < 1003 else 5

    producer = Grows(clock=clock)
    summary = publish(
        DummySource(), producer, "t", count=20_000, rate=2000, clock=clock, sleep=clock.sleep
    )
    assert summary.sent == 20_000
    early = {s.partition for s in producer.sent if s.at < 1005}
    late = {s.partition for s in producer.sent if s.at >= 1006}
    assert early == {0, 1} and late == {0, 1, 2, 3, 4}


def test_points_bring_their_own_keys_unless_told_otherwise() -> None:
    points = [KeyedPoint("a", [1.0], 1.0, None, "dev-1"), Point("b", [2.0], 2.0)]
    producer = FakeProducer()
    publish(points, producer, "t")
    assert [s.key for s in producer.sent] == [b"dev-1", None]
    producer = FakeProducer()
    publish(points, producer, "t", keys=None)
    assert [s.key for s in producer.sent] == [None, None]
    assert point_key(0, points[0]) == "dev-1" and point_key(1, points[1]) is None
