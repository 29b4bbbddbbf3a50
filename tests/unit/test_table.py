"""Following a compacted topic (and waiting for partitions) on the in-memory driver."""

from __future__ import annotations

import threading

import pytest

from bus.clients.base import Record, TopicPartition, TransientBusError
from bus.clients.memory import MemoryBroker
from bus.partitions import wait_for_partitions
from bus.table import Table
from core.errors import BusError
from core.shutdown import StopFlag

TOPIC = "models"


class FakeClock:
    """Seconds that advance by ``step`` at every reading."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic(TOPIC, 2)
    return broker


def values(records: list[Record]) -> list[bytes | None]:
    return sorted((r.value for r in records), key=lambda v: v or b"")


def test_catch_up_reads_to_the_ends_taken_at_open_then_poll_follows(
    broker: MemoryBroker,
) -> None:
    for i in range(6):
        broker.produce(TOPIC, b"v%d" % i, key=b"m%d" % (i % 3))
    with Table(broker.driver(), TOPIC) as table:
        table.open()
        assert not table.caught_up()
        assert len(table.catch_up(timeout_s=5)) == 6
        assert table.caught_up()
        assert table.poll(0.0) == []
        broker.produce(TOPIC, b"later", key=b"m0")
        assert values(table.poll(0.0)) == [b"later"]
        assert table.partitions == [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]


def test_latest_per_key_and_tombstones(broker: MemoryBroker) -> None:
    broker.produce(TOPIC, b"a1", key=b"a")
    broker.produce(TOPIC, b"b1", key=b"b")
    broker.produce(TOPIC, b"a2", key=b"a")
    broker.produce(TOPIC, b"keyless")
    with Table(broker.driver(), TOPIC, keep_latest=True) as table:
        table.open().catch_up(timeout_s=5)
        assert table.latest is not None
        assert {k: r.value for k, r in table.latest.items()} == {b"a": b"a2", b"b": b"b1"}
        broker.produce(TOPIC, None, key=b"a")
        (tombstone,) = table.poll(0.0)
        assert (tombstone.key, tombstone.value) == (b"a", None)
        assert set(table.latest) == {b"b"}


def test_an_open_transaction_is_not_waited_for_and_shows_once_committed(
    broker: MemoryBroker,
) -> None:
    broker.produce(TOPIC, b"old", key=b"m", partition=0)
    producer = broker.driver().producer(transactional_id="trainer")
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(TOPIC, b"pending", key=b"m", partition=0)
    with Table(broker.driver(), TOPIC) as table:
        table.open()
        assert values(table.catch_up(timeout_s=5)) == [b"old"]
        producer.commit_transaction()
        assert values(table.poll(0.0)) == [b"pending"]


def test_new_partitions_are_read_from_their_beginning(broker: MemoryBroker) -> None:
    broker.produce(TOPIC, b"first", partition=0)
    with Table(broker.driver(), TOPIC, partition_check_s=0.0) as table:
        table.open().catch_up(timeout_s=5)
        broker.create_topic(TOPIC, 3)
        broker.produce(TOPIC, b"in-new", partition=2)
        broker.produce(TOPIC, b"in-old", partition=0)
        assert values(table.poll(0.0)) == [b"in-new", b"in-old"]
        assert TopicPartition(TOPIC, 2) in table.partitions


def test_tail_reads_the_last_records_of_each_partition(broker: MemoryBroker) -> None:
    for i in range(10):
        broker.produce(TOPIC, b"%d" % i, partition=i % 2)
    with Table(broker.driver(), TOPIC, tail=2) as table:
        table.open()
        assert values(table.catch_up(timeout_s=5)) == [b"6", b"7", b"8", b"9"]


def test_transient_faults_are_retried_then_a_bus_error(broker: MemoryBroker) -> None:
    broker.produce(TOPIC, b"v")
    clock = FakeClock(1.0)
    table = Table(broker.driver(), TOPIC, retry_s=5.0, backoff_s=0.001, clock=clock).open()
    broker.fail_next("poll", TransientBusError("broker restarting"), times=2)
    assert table.poll(0.0) == []
    assert table.poll(0.0) == []
    assert values(table.poll(0.0)) == [b"v"]
    broker.fail_next("poll", TransientBusError("broker gone"), times=100)
    with pytest.raises(BusError, match="KAFKA_BOOTSTRAP_SERVERS"):
        for _ in range(100):
            table.poll(0.0)
    table.close()


def test_open_rides_through_transient_faults_then_a_bus_error(broker: MemoryBroker) -> None:
    """A seek refused for a moment at open (a broker restarting; librdkafka's _OUTDATED)
    does not end the reader: open tries again, like poll, for retry_s at most."""
    broker.produce(TOPIC, b"v")
    broker.fail_next("seek_to_beginning", TransientBusError("seek overtaken by a reset"), times=3)
    table = Table(broker.driver(), TOPIC, retry_s=5.0, backoff_s=0.001, clock=FakeClock(1.0))
    assert values(table.open().catch_up(timeout_s=5)) == [b"v"]
    assert broker.pending_faults("seek_to_beginning") == 0
    table.close()
    broker.fail_next("seek_to_beginning", TransientBusError("broker gone"), times=100)
    again = Table(broker.driver(), TOPIC, retry_s=5.0, backoff_s=0.001, clock=FakeClock(1.0))
    with pytest.raises(BusError, match="KAFKA_BOOTSTRAP_SERVERS"):
        again.open()
    again.close()


def test_catch_up_gives_up_after_its_timeout(broker: MemoryBroker) -> None:
    broker.produce(TOPIC, b"v")
    table = Table(broker.driver(), TOPIC, backoff_s=0.001, clock=FakeClock(1.0)).open()
    broker.fail_next("poll", TransientBusError("slow"), times=100)
    with pytest.raises(BusError, match=r"could not read topic 'models' to its end within 10s"):
        table.catch_up(timeout_s=10)


def test_using_a_table_before_open_is_an_error(broker: MemoryBroker) -> None:
    with pytest.raises(BusError, match="open"):
        Table(broker.driver(), TOPIC).poll(0.0)


def test_read_back_reads_from_the_end_in_growing_windows(broker: MemoryBroker) -> None:
    for i in range(100):
        broker.produce(TOPIC, b"%d" % i, key=b"k%d" % (i % 10 if i < 90 else 99), partition=0)
    table = Table(broker.driver(), TOPIC)
    assert table.partition_ids() == [0, 1]
    found = table.read_back(0, lambda rs: any(r.key == b"k5" for r in rs), first_window=4)
    # windows of 4 then 16 records: [96, 100), then [80, 96) holds k5 (offset 85)
    assert [r.offset for r in found] == list(range(80, 100))
    everything = table.read_back(0, lambda rs: False, first_window=4)
    assert [r.offset for r in everything] == list(range(100))
    assert table.read_back(1, lambda rs: True) == []
    table.close()


def test_wait_for_partitions_waits_for_a_new_topic(broker: MemoryBroker) -> None:
    consumer = broker.driver().consumer(group_id=None)
    broker.fail_next("partitions_for", TransientBusError("no metadata yet"))
    timer = threading.Timer(0.2, broker.create_topic, args=("late", 3))
    timer.start()
    try:
        assert wait_for_partitions(consumer, "late", timeout_s=10) == [0, 1, 2]
    finally:
        timer.cancel()


def test_wait_for_partitions_says_what_to_do_about_a_missing_topic(
    broker: MemoryBroker,
) -> None:
    consumer = broker.driver().consumer(group_id=None)
    with pytest.raises(BusError, match=r"topic 'missing' does not exist.*streamscore topics"):
        wait_for_partitions(consumer, "missing", timeout_s=5, clock=FakeClock(2.0))
    stop = StopFlag()
    stop.set()
    assert wait_for_partitions(consumer, "missing", timeout_s=None, stop=stop) == []
