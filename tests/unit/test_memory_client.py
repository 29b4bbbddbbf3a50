"""The in-memory driver keeps the Kafka rules the kernel relies on."""

from __future__ import annotations

import pytest

from bus.clients.base import (
    FencedError,
    RecordTooLargeError,
    TopicPartition,
    TransientBusError,
)
from bus.clients.memory import MemoryBroker, MemoryConsumer
from core.errors import BusError, ConfigError

TP0 = TopicPartition("in", 0)
TP1 = TopicPartition("in", 1)


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker(clock=lambda: 1700000000.5)
    broker.create_topic("in", partitions=2)
    return broker


def test_records_are_read_in_offset_order_with_their_fields(broker: MemoryBroker) -> None:
    for i in range(5):
        broker.produce("in", f"v{i}".encode(), key=b"k", partition=i % 2, headers=[("h", b"x")])
    consumer = broker.driver().consumer(group_id=None)
    consumer.assign([TP0, TP1])
    records = consumer.poll(0.0)
    assert sorted((r.partition, r.offset, r.value) for r in records) == [
        (0, 0, b"v0"),
        (0, 1, b"v2"),
        (0, 2, b"v4"),
        (1, 0, b"v1"),
        (1, 1, b"v3"),
    ]
    assert {r.timestamp for r in records} == {1700000000500}
    assert records[0].header("h") == b"x"
    assert consumer.position(TP0) == 3
    assert consumer.poll(0.0) == []


def test_keys_pick_a_stable_partition_and_max_records_is_kept(broker: MemoryBroker) -> None:
    producer = broker.driver().producer()
    for i in range(10):
        producer.send("in", str(i).encode(), key=b"same")
    assert len({r.partition for r in broker.records("in")}) == 1
    consumer = broker.driver().consumer(group_id=None, max_poll_records=4)
    consumer.assign([TP0, TP1])
    assert len(consumer.poll(0.0)) == 4
    assert len(consumer.poll(0.0, max_records=3)) == 3


def test_transaction_records_invisible_until_commit_and_dropped_on_abort(
    broker: MemoryBroker,
) -> None:
    broker.create_topic("out")
    producer = broker.driver().producer(transactional_id="tx")
    producer.init_transactions()
    reader = broker.driver().consumer(group_id=None)
    reader.assign([TopicPartition("out", 0)])
    dirty = broker.driver().consumer(group_id=None, read_committed=False)
    dirty.assign([TopicPartition("out", 0)])

    producer.begin_transaction()
    producer.send("out", b"aborted")
    producer.abort_transaction()
    producer.begin_transaction()
    producer.send("out", b"kept")
    producer.send_offsets_to_transaction({TP0: 7}, "group")
    assert reader.poll(0.0) == []
    assert reader.end_offsets([TopicPartition("out", 0)]) == {TopicPartition("out", 0): 1}
    assert broker.committed_offsets("group") == {}
    producer.commit_transaction()

    assert [r.value for r in reader.poll(0.0)] == [b"kept"]
    assert [r.value for r in dirty.poll(0.0)] == [b"aborted", b"kept"]
    assert broker.committed_offsets("group") == {TP0: 7}
    assert [r.value for r in broker.records("out")] == [b"kept"]


def test_a_new_instance_fences_the_old_one_and_aborts_its_transaction(
    broker: MemoryBroker,
) -> None:
    old = broker.driver().producer(transactional_id="tx")
    old.init_transactions()
    old.begin_transaction()
    old.send("in", b"half", partition=0)
    new = broker.driver().producer(transactional_id="tx")
    new.init_transactions()
    with pytest.raises(FencedError, match="'tx'"):
        old.commit_transaction()
    assert broker.records("in") == []
    assert [r.value for r in broker.records("in", committed_only=False)] == [b"half"]


def test_sends_outside_a_transaction_and_unknown_topics_are_errors(
    broker: MemoryBroker,
) -> None:
    producer = broker.driver().producer(transactional_id="tx")
    producer.init_transactions()
    with pytest.raises(BusError, match="begin_transaction"):
        producer.send("in", b"x")
    with pytest.raises(BusError, match="does not exist"):
        broker.driver().producer().send("nope", b"x")


def test_a_record_over_max_request_size_is_refused(broker: MemoryBroker) -> None:
    producer = broker.driver().producer(max_request_size=100)
    with pytest.raises(RecordTooLargeError, match="101 bytes"):
        producer.send("in", b"x" * 101)
    producer.send("in", b"x" * 100)


def test_injected_faults_fire_once_each(broker: MemoryBroker) -> None:
    producer = broker.driver().producer()
    broker.fail_next("flush", TransientBusError("broker gone"), times=2)
    for _ in range(2):
        with pytest.raises(TransientBusError, match="broker gone"):
            producer.flush()
    producer.flush()
    assert broker.pending_faults("flush") == 0
    assert broker.calls["flush"] == 3


def test_group_gives_all_partitions_to_one_member_then_splits_between_two(
    broker: MemoryBroker,
) -> None:
    events: list[tuple[str, str, list[TopicPartition]]] = []

    def member(name: str) -> MemoryConsumer:
        consumer = broker.driver().consumer(group_id="g")
        consumer.subscribe(
            ["in"],
            on_assign=lambda tps: events.append((name, "assign", tps)),
            on_revoke=lambda tps: events.append((name, "revoke", tps)),
        )
        return consumer

    first = member("a")
    first.poll(0.0)
    assert first.assignment() == {TP0, TP1}
    second = member("b")
    first.poll(0.0)
    second.poll(0.0)
    assert first.assignment() | second.assignment() == {TP0, TP1}
    assert first.assignment().isdisjoint(second.assignment())
    assert events[:2] == [("a", "assign", [TP0, TP1]), ("a", "revoke", [TP0, TP1])]
    second.close()
    first.poll(0.0)
    assert first.assignment() == {TP0, TP1}


def test_a_commit_from_an_old_generation_fails(broker: MemoryBroker) -> None:
    first = broker.driver().consumer(group_id="g")
    first.subscribe(["in"])
    first.poll(0.0)
    first.commit({TP0: 1})
    second = broker.driver().consumer(group_id="g")
    second.subscribe(["in"])
    with pytest.raises(TransientBusError, match="rebalanced"):
        first.commit({TP0: 2})
    assert broker.committed_offsets("g") == {TP0: 1}


def test_positions_start_at_committed_offsets_then_the_reset(broker: MemoryBroker) -> None:
    for _ in range(4):
        broker.produce("in", b"v", partition=0)
        broker.produce("in", b"v", partition=1)
    committer = broker.driver().consumer(group_id="g")
    committer.assign([TP0])
    committer.commit({TP0: 3})
    assert committer.committed([TP0, TP1]) == {TP0: 3, TP1: None}
    earliest = broker.driver().consumer(group_id="g")
    earliest.assign([TP0, TP1])
    assert (earliest.position(TP0), earliest.position(TP1)) == (3, 0)
    latest = broker.driver().consumer(group_id="g", auto_offset_reset="latest")
    latest.assign([TP0, TP1])
    assert (latest.position(TP0), latest.position(TP1)) == (3, 4)
    latest.seek(TP1, 1)
    assert [r.offset for r in latest.poll(0.0) if r.partition == 1] == [1, 2, 3]
    latest.seek_to_beginning([TP0])
    assert latest.position(TP0) == 0


def test_unknown_options_and_partitions_for(broker: MemoryBroker) -> None:
    with pytest.raises(ConfigError, match="bogus"):
        broker.driver().consumer(bogus=1)
    with pytest.raises(ConfigError, match="bogus"):
        broker.driver().producer(bogus=1)
    consumer = broker.driver().consumer(group_id=None)
    assert consumer.partitions_for("in") == [0, 1]
    assert consumer.partitions_for("missing") == []


def test_poll_chunks_from_the_base_class(broker: MemoryBroker) -> None:
    for i in range(3):
        broker.produce("in", str(i).encode(), key=b"k%d" % i, partition=0)
    consumer = broker.driver().consumer(group_id=None)
    consumer.assign([TP0])
    (chunk,) = consumer.poll_chunks(0.0)
    assert chunk.next_offset == 3
    assert chunk.columns() == ([0, 1, 2], [b"k0", b"k1", b"k2"], [b"0", b"1", b"2"])
