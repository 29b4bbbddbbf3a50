"""Both Kafka client drivers against the real broker: the interface of `bus.clients.base`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import kafka
import pytest
from kafka.partitioner.default import murmur2

from bus.clients import driver_for
from bus.clients.base import (
    Consumer,
    Driver,
    FencedError,
    Producer,
    Record,
    RecordTooLargeError,
    TopicPartition,
)
from bus.settings import KafkaSettings

CLIENTS = ["kafka-python", "confluent"]


class Clients:
    """A driver, and every producer and consumer made from it (closed after the test)."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.made: list[Producer | Consumer] = []

    def producer(self, **options: Any) -> Producer:
        producer = self.driver.producer(**options)
        self.made.append(producer)
        return producer

    def consumer(self, **options: Any) -> Consumer:
        consumer = self.driver.consumer(**options)
        self.made.append(consumer)
        return consumer

    def close(self) -> None:
        for client in reversed(self.made):
            try:
                if isinstance(client, Producer):
                    client.close(2)
                else:
                    client.close()
            except Exception:  # a fenced producer may not close cleanly
                pass


@pytest.fixture(params=CLIENTS)
def clients(request: pytest.FixtureRequest, kafka_settings: KafkaSettings) -> Iterator[Clients]:
    """The driver of one client library, with its clients closed at the end."""
    made = Clients(driver_for(replace(kafka_settings, client=request.param)))
    yield made
    made.close()


def tps_of(topic: str, partitions: int) -> list[TopicPartition]:
    """Every partition of ``topic``."""
    return [TopicPartition(topic, p) for p in range(partitions)]


def read_to_end(
    consumer: Consumer, tps: Sequence[TopicPartition], timeout_s: float = 30
) -> list[Record]:
    """Poll until the position of every partition reached its end offset."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    ends = consumer.end_offsets(tps)
    while any(consumer.position(tp) < ends[tp] for tp in tps):
        assert time.monotonic() < deadline, (
            f"positions {[consumer.position(tp) for tp in tps]} never reached {ends}"
        )
        records += consumer.poll(0.5)
    return records


def poll_until(
    consumers: Sequence[Consumer], done: Callable[[], bool], timeout_s: float = 60
) -> list[Record]:
    """Poll every consumer in turn until ``done()``."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "gave up waiting"
        for consumer in consumers:
            records += consumer.poll(0.2)
    return records


# --- records ---------------------------------------------------------------------------


def test_records_keep_keys_values_headers_partitions_and_timestamps(
    clients: Clients, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=3)
    producer = clients.producer()
    assert producer.partition_count(topic) == 3
    started = time.time() * 1000
    for i in range(30):
        headers = [("h", b"1"), ("h", b"2"), ("n", b"%d" % i)]
        producer.send(topic, b"value-%d" % i, key=b"k%d" % i, partition=i % 3, headers=headers)
    producer.send(topic, None, key=b"tombstone", partition=0)
    for i in range(20):  # the client's partitioner: murmur2, as Java clients and kafka-python
        producer.send(topic, b"keyed", key=b"entity-%d" % i)
    producer.send(topic, b"no key, no partition")
    producer.flush()

    consumer = clients.consumer()
    consumer.assign(tps_of(topic, 3))
    assert consumer.assignment() == set(tps_of(topic, 3))
    records = read_to_end(consumer, tps_of(topic, 3))
    assert len(records) == 52
    explicit = [r for r in records if r.value and r.value.startswith(b"value-")]
    for r in explicit:
        i = int(r.value[len(b"value-") :]) if r.value else -1
        assert (r.topic, r.partition, r.key) == (topic, i % 3, b"k%d" % i)
        assert list(r.headers) == [("h", b"1"), ("h", b"2"), ("n", b"%d" % i)]
        assert r.header("h") == b"2" and r.header("missing") is None
        assert started - 60_000 < r.timestamp < started + 60_000
    for p in range(3):
        offsets = [r.offset for r in records if r.partition == p]
        assert offsets == sorted(offsets)
    tombstone = next(r for r in records if r.key == b"tombstone")
    assert (tombstone.value, tombstone.partition, list(tombstone.headers)) == (None, 0, [])
    for r in records:
        if r.value == b"keyed" and r.key is not None:
            assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % 3


def test_chunks_hold_the_same_records_as_poll(
    clients: Clients, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=2)
    producer = clients.producer()
    for i in range(500):
        producer.send(topic, b"%d" % i, key=None if i % 7 else b"k", partition=i % 2)
    producer.flush()
    consumer = clients.consumer()
    tps = tps_of(topic, 2)
    consumer.assign(tps)
    records = read_to_end(consumer, tps)
    consumer.seek_to_beginning(tps)
    assert [consumer.position(tp) for tp in tps] == [0, 0]
    columns: dict[int, tuple[list[int], list[bytes | None], list[bytes | None]]] = {
        0: ([], [], []),
        1: ([], [], []),
    }
    deadline = time.monotonic() + 30
    while sum(len(c[0]) for c in columns.values()) < 500:
        assert time.monotonic() < deadline
        for chunk in consumer.poll_chunks(0.5, max_records=120):
            offsets, keys, values = chunk.columns()
            assert 0 < len(offsets) <= 120
            assert chunk.next_offset == offsets[-1] + 1
            mine = columns[chunk.partition]
            mine[0].extend(offsets)
            mine[1].extend(keys)
            mine[2].extend(values)
    for p in (0, 1):
        polled = [r for r in records if r.partition == p]
        assert columns[p] == (
            [r.offset for r in polled],
            [r.key for r in polled],
            [r.value for r in polled],
        )


def test_seek_position_and_partitions(clients: Clients, make_topic: Callable[..., str]) -> None:
    topic = make_topic(partitions=2)
    producer = clients.producer()
    for i in range(10):
        producer.send(topic, b"%d" % i, partition=0)
    producer.flush()
    consumer = clients.consumer()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 4)  # right after assign: the partition may not fetch yet
    assert consumer.position(tp) == 4
    assert first_records(consumer)[0].offset == 4
    consumer.seek(tp, 1)
    assert consumer.position(tp) == 1
    assert first_records(consumer)[0].offset == 1
    assert consumer.end_offsets([tp, TopicPartition(topic, 1)]) == {
        tp: 10,
        TopicPartition(topic, 1): 0,
    }
    assert consumer.partitions_for(topic) == [0, 1]
    assert consumer.partitions_for(topic + "-missing") == []


# --- groups ----------------------------------------------------------------------------


def test_two_consumers_share_a_topic_and_callbacks_run_inside_poll(
    clients: Clients, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    topic = make_topic(partitions=2)
    producer = clients.producer()
    for i in range(10):
        producer.send(topic, b"%d" % i, partition=i % 2)
    producer.flush()
    group = unique_name("g")
    polling: set[str] = set()  # the consumers inside poll right now
    events: list[tuple[str, str, list[TopicPartition], bool]] = []
    consumers: dict[str, Consumer] = {}

    def callbacks(name: str) -> dict[str, Callable[[list[TopicPartition]], None]]:
        def on_assign(tps: list[TopicPartition]) -> None:
            events.append((name, "assign", tps, name in polling))
            consumers[name].position(tps[0])  # blocking calls work in a callback

        def on_revoke(tps: list[TopicPartition]) -> None:
            events.append((name, "revoke", tps, name in polling))
            consumer = consumers[name]
            consumer.commit({tp: consumer.position(tp) for tp in tps})  # as the kernel does

        return {"on_assign": on_assign, "on_revoke": on_revoke}

    def poll_until(wanted: dict[str, int]) -> list[Record]:
        """Poll each consumer on a thread of its own (as services do: one polling the
        other in turn can wait in a join for a member it keeps from polling) until each
        holds the number of partitions ``wanted`` says."""
        records: list[Record] = []
        failures: list[BaseException] = []
        holding = dict.fromkeys(wanted, False)
        stop = threading.Event()

        def run(name: str) -> None:
            consumer = consumers[name]
            try:
                while not stop.is_set():
                    polling.add(name)
                    records.extend(consumer.poll(0.2))
                    polling.discard(name)
                    holding[name] = len(consumer.assignment()) == wanted[name]
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=run, args=(name,), daemon=True) for name in wanted]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        try:
            while not all(holding.values()) and not failures:
                assert time.monotonic() < deadline, f"gave up waiting: {holding}"
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert not failures, failures
        return records

    first = consumers["first"] = clients.consumer(group_id=group)
    first.subscribe([topic], **callbacks("first"))
    read = poll_until({"first": 2})
    deadline = time.monotonic() + 60
    while len(read) < 10:  # every record, whichever poll returned it
        assert time.monotonic() < deadline, f"gave up waiting: {len(read)} of 10 read"
        read += first.poll(0.2)
    assert ("first", "assign", tps_of(topic, 2)) in [e[:3] for e in events]

    second = consumers["second"] = clients.consumer(group_id=group)
    second.subscribe([topic], **callbacks("second"))
    poll_until({"first": 1, "second": 1})
    assert first.assignment() | second.assignment() == set(tps_of(topic, 2))
    moved = next(iter(second.assignment()))
    revoked = [
        tp for name, kind, tps, _ in events if (name, kind) == ("first", "revoke") for tp in tps
    ]
    assert moved in revoked
    assert second.committed([moved]) == {moved: 5}  # committed by first's on_revoke
    assert ("second", "assign", [moved]) in [e[:3] for e in events]
    assert all(inside for *_, inside in events), events


def test_an_error_in_a_rebalance_callback_comes_out_of_poll(
    clients: Clients, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    topic = make_topic()

    def on_assign(tps: list[TopicPartition]) -> None:
        raise RuntimeError(f"cannot take {tps}")

    consumer = clients.consumer(group_id=unique_name("g"))
    consumer.subscribe([topic], on_assign=on_assign)
    deadline = time.monotonic() + 60
    with pytest.raises(RuntimeError, match="cannot take"):
        while time.monotonic() < deadline:
            consumer.poll(0.2)


def test_commit_and_committed(
    clients: Clients, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    topic = make_topic(partitions=2)
    producer = clients.producer()
    for i in range(10):
        producer.send(topic, b"%d" % i, partition=i % 2)
    producer.flush()
    group = unique_name("g")
    tp0, tp1 = tps_of(topic, 2)
    consumer = clients.consumer(group_id=group)
    consumer.assign([tp0, tp1])
    assert consumer.committed([tp0, tp1]) == {tp0: None, tp1: None}
    consumer.commit({tp0: 3})
    assert consumer.committed([tp0, tp1]) == {tp0: 3, tp1: None}
    consumer.commit({tp1: 4}, asynchronous=True)
    deadline = time.monotonic() + 30
    while consumer.committed([tp1])[tp1] != 4:
        assert time.monotonic() < deadline
        consumer.poll(0.2)
    other = clients.consumer(group_id=group)
    other.assign([tp0, tp1])
    assert [other.position(tp) for tp in (tp0, tp1)] == [3, 4]  # it starts where the group is
    assert first_records(other)[0].offset in (3, 4)


def test_static_membership_joins_with_its_instance_id(
    clients: Clients, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    topic = make_topic()
    consumer = clients.consumer(group_id=unique_name("g"), group_instance_id=unique_name("m"))
    consumer.subscribe([topic])
    poll_until([consumer], lambda: consumer.assignment() == {TopicPartition(topic, 0)})


# --- transactions ----------------------------------------------------------------------


def test_transactions_commit_abort_and_carry_consumer_offsets(
    clients: Clients, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    source, target = make_topic(), make_topic()
    plain = clients.producer()
    for i in range(5):
        plain.send(source, b"in-%d" % i)
    plain.flush()
    group = unique_name("g")
    src = TopicPartition(source, 0)
    consumer = clients.consumer(group_id=group)
    consumer.subscribe([source])
    poll_until([consumer], lambda: consumer.assignment() == {src})
    consumer.seek(src, 0)
    consumed = poll_until([consumer], lambda: consumer.position(src) >= 5)
    assert consumed  # read in the group, so the group metadata is a joined member's

    producer = clients.producer(transactional_id=unique_name("tx"))
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(target, b"committed", key=b"k")
    producer.send_offsets_to_transaction({src: 5}, consumer.group_metadata())
    producer.commit_transaction()
    producer.begin_transaction()
    producer.send(target, b"aborted", key=b"k")
    producer.flush()
    producer.abort_transaction()
    other_group = unique_name("g2")
    producer.begin_transaction()
    producer.send(target, b"second", key=b"k")
    producer.send_offsets_to_transaction({src: 2}, other_group)  # a group id is enough too
    producer.commit_transaction()

    tgt = TopicPartition(target, 0)
    committed_reader = clients.consumer()
    committed_reader.assign([tgt])
    assert [r.value for r in read_to_end(committed_reader, [tgt])] == [b"committed", b"second"]
    everything = clients.consumer(read_committed=False)
    everything.assign([tgt])
    seen = poll_until([everything], lambda: everything.position(tgt) >= 3, 30)
    assert [r.value for r in seen][:3] == [b"committed", b"aborted", b"second"]
    assert consumer.committed([src]) == {src: 5}
    checker = clients.consumer(group_id=other_group)
    assert checker.committed([src]) == {src: 2}


def test_a_second_producer_with_the_same_transactional_id_fences_the_first(
    clients: Clients, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    topic = make_topic()
    transactional_id = unique_name("tx")
    first = clients.producer(transactional_id=transactional_id)
    first.init_transactions()
    first.begin_transaction()
    first.send(topic, b"zombie")
    second = clients.producer(transactional_id=transactional_id)
    second.init_transactions()
    with pytest.raises(FencedError, match="another producer with the same transactional id"):
        first.send(topic, b"zombie again")
        first.commit_transaction()
    second.begin_transaction()
    second.send(topic, b"new")
    second.commit_transaction()
    reader = clients.consumer()
    tp = TopicPartition(topic, 0)
    reader.assign([tp])
    assert [r.value for r in read_to_end(reader, [tp])] == [b"new"]


def test_a_record_over_the_limit_is_record_too_large(
    clients: Clients, make_topic: Callable[..., str]
) -> None:
    topic = make_topic()
    small = clients.producer(max_request_size=10_000)
    with pytest.raises(RecordTooLargeError):  # the client knows: at once, or at the flush
        small.send(topic, b"x" * 20_000)
        small.flush()
    default = clients.producer()  # its limit is the broker's default (1 MiB)
    with pytest.raises(RecordTooLargeError):
        default.send(topic, b"x" * 2_000_000)
    big = clients.producer(max_request_size=8 * 1024 * 1024)
    with pytest.raises(RecordTooLargeError):  # the broker refuses it
        big.send(topic, b"x" * 2_000_000)
        big.flush()
    for producer in (small, default, big):  # an error of that record only
        producer.send(topic, b"fine")
        producer.flush()
    reader = clients.consumer()
    tp = TopicPartition(topic, 0)
    reader.assign([tp])
    assert [r.value for r in read_to_end(reader, [tp])] == [b"fine"] * 3


def test_position_reaches_the_end_offset_after_a_transactional_compacted_topic(
    clients: Clients, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    topic = make_topic(compact=True)
    tp = TopicPartition(topic, 0)
    producer = clients.producer(transactional_id=unique_name("tx"))
    producer.init_transactions()
    for version in range(3):
        producer.begin_transaction()
        producer.send(topic, b'{"version": %d}' % version, key=b"model")
        producer.commit_transaction()
    reader = clients.consumer()
    reader.assign([tp])
    assert reader.position(tp) == 0
    records = read_to_end(reader, [tp])  # fails when the position stays on the last marker
    assert [r.value for r in records] == [b'{"version": %d}' % v for v in range(3)]
    assert reader.end_offsets([tp]) == {tp: 6}  # three records, three commit markers
    assert reader.position(tp) == 6

    producer.begin_transaction()
    producer.send(topic, b"open", key=b"model")
    producer.flush()
    assert reader.end_offsets([tp]) == {tp: 6}  # the last stable offset
    assert reader.poll(1.0) == []
    assert reader.position(tp) == 6
    producer.abort_transaction()
    assert read_to_end(reader, [tp]) == []
    assert reader.position(tp) == reader.end_offsets([tp])[tp] == 8


# --- kafka-python's fallback -----------------------------------------------------------


def test_kafka_python_falls_back_to_its_own_decoding_when_the_version_differs(
    kafka_settings: KafkaSettings,
    make_topic: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from bus.clients import kafka_python

    monkeypatch.setattr(kafka, "__version__", "3.1.0")
    monkeypatch.setattr(kafka_python.KafkaPythonConsumer, "_fallback_logged", False)
    topic = make_topic()
    made = Clients(driver_for(replace(kafka_settings, client="kafka-python")))
    try:
        producer = made.producer()
        producer.send(topic, b"a", key=b"k", headers=[("h", b"v")])
        producer.send(topic, b"b")
        producer.flush()
        tp = TopicPartition(topic, 0)
        with caplog.at_level(logging.INFO, logger="bus.clients.kafka_python"):
            consumer = made.consumer()
            made.consumer()
        fallbacks = [r for r in caplog.records if "own (slower) record decoding" in r.message]
        assert len(fallbacks) == 1 and "found 3.1.0" in fallbacks[0].message
        consumer.assign([tp])
        records = read_to_end(consumer, [tp])
        assert [(r.key, r.value, list(r.headers)) for r in records] == [
            (b"k", b"a", [("h", b"v")]),
            (None, b"b", []),
        ]
        consumer.seek_to_beginning([tp])
        (chunk,) = poll_until_chunks(consumer)
        assert chunk.columns() == ([0, 1], [b"k", None], [b"a", b"b"])
    finally:
        made.close()


def first_records(consumer: Consumer, timeout_s: float = 30) -> list[Record]:
    """The first non-empty poll."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        records = consumer.poll(0.5)
        if records:
            return records
    raise AssertionError("no records")


def poll_until_chunks(consumer: Consumer, timeout_s: float = 30) -> list[Any]:
    """The first non-empty poll_chunks."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        chunks = consumer.poll_chunks(0.5)
        if chunks:
            return chunks
    raise AssertionError("no chunks")
