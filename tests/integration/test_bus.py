"""The bus against a real broker: clients, consumer groups, transactions, topics, dead letters."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import CommitFailedError, RebalanceInProgressError

from bus.clients import make_admin, make_consumer, make_producer
from bus.deadletter import DeadLetters
from bus.messages import Point
from bus.settings import KafkaSettings
from bus.topics import TopicLayout, Topics, ensure_topics
from core.errors import BusError
from streamscore.broker import free_port

Record = Any  # kafka.consumer.fetcher.ConsumerRecord


@pytest.fixture
def admin(kafka_settings: KafkaSettings) -> Iterator[KafkaAdminClient]:
    """An admin client on the session's broker."""
    client = make_admin(kafka_settings)
    try:
        yield client
    finally:
        client.close()


def poll_until(
    consumers: list[KafkaConsumer],
    done: Callable[[], bool],
    *,
    timeout_s: float = 30.0,
    on_records: Callable[[int, list[Record]], None] | None = None,
    commit: bool = False,
) -> None:
    """Poll every consumer in turn until ``done()``; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached within {timeout_s:.0f}s")
        for index, consumer in enumerate(consumers):
            batches = consumer.poll(timeout_ms=100)
            records = [record for batch in batches.values() for record in batch]
            if on_records is not None and records:
                on_records(index, records)
            if commit and records:
                # while the group rebalances a commit may fail: the records come again
                with contextlib.suppress(CommitFailedError, RebalanceInProgressError):
                    consumer.commit()


def consume(consumer: KafkaConsumer, count: int, timeout_s: float = 20.0) -> list[Record]:
    """The next ``count`` records one consumer gets (fails the test if they do not come)."""
    got: list[Record] = []
    poll_until(
        [consumer],
        lambda: len(got) >= count,
        timeout_s=timeout_s,
        on_records=lambda _, records: got.extend(records),
    )
    return got


def reader(settings: KafkaSettings, topic: str, partitions: int = 1, **overrides: Any) -> Any:
    """A consumer assigned (no group) to every partition of ``topic`` from the beginning."""
    consumer = make_consumer(settings, group_id=None, **overrides)
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    consumer.seek_to_beginning()
    return consumer


# --- clients ---------------------------------------------------------------------------


def test_points_round_trip_through_a_producer_and_a_consumer_group(
    kafka_settings: KafkaSettings,
    make_topic: Callable[..., str],
    unique_name: Callable[[str], str],
) -> None:
    topic = make_topic(partitions=1)
    points = [Point(id=f"p-{i:06d}", x=[i * 0.25, -1.5], y=3.71 + i) for i in range(20)]
    producer = make_producer(kafka_settings)
    try:
        for point in points:
            producer.send(
                topic,
                key=b"sensor-1",
                value=point.to_bytes(),
                headers=[("trace", point.id.encode())],
            )
        producer.flush(timeout=20)
    finally:
        producer.close(timeout=5)

    consumer = make_consumer(kafka_settings, topic, group_id=unique_name("g"))
    try:
        records = consume(consumer, len(points))
    finally:
        consumer.close()
    assert [Point.from_bytes(r.value) for r in records] == points  # same order, same values
    assert {r.key for r in records} == {b"sensor-1"}
    assert [dict(r.headers)["trace"] for r in records] == [p.id.encode() for p in points]
    assert [r.offset for r in records] == list(range(len(points)))


def test_clients_say_where_they_looked_when_kafka_cannot_be_reached() -> None:
    nowhere = replace(KafkaSettings.from_env({}), bootstrap_servers=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(BusError) as info:
        make_admin(nowhere, bootstrap_timeout_ms=1000)
    assert time.monotonic() - started < 10
    assert f"cannot reach Kafka at {nowhere.bootstrap_servers}" in str(info.value)
    assert "`streamscore kafka up`" in str(info.value)


# --- consumer groups -------------------------------------------------------------------


def test_a_consumer_group_shares_partitions_and_hands_them_over_without_loss(
    kafka_settings: KafkaSettings,
    make_topic: Callable[..., str],
    unique_name: Callable[[str], str],
) -> None:
    topic = make_topic(partitions=4)
    group = unique_name("g")
    producer = make_producer(kafka_settings)

    def produce(round_: int) -> None:
        for partition in range(4):
            for i in range(10):
                value = f"r{round_}-p{partition}-{i}".encode()
                producer.send(topic, value=value, partition=partition)
        producer.flush(timeout=20)

    seen: list[list[tuple[int, int]]] = [[], []]  # (partition, offset) read by each consumer

    def record(index: int, records: list[Record]) -> None:
        seen[index].extend((r.partition, r.offset) for r in records)

    first = make_consumer(kafka_settings, topic, group_id=group, max_poll_records=5)
    second = make_consumer(kafka_settings, topic, group_id=group, max_poll_records=5)
    consumers = [first, second]
    try:

        def shared() -> bool:
            one, two = ({tp.partition for tp in c.assignment()} for c in consumers)
            return bool(one) and bool(two) and not one & two and one | two == {0, 1, 2, 3}

        poll_until(consumers, shared, on_records=record, commit=True)
        mine = [{tp.partition for tp in c.assignment()} for c in consumers]

        produce(1)
        poll_until(
            consumers, lambda: len(seen[0]) + len(seen[1]) >= 40, on_records=record, commit=True
        )
        # each read all of its own partitions and nothing else
        assert sorted(seen[0]) == [(p, o) for p in sorted(mine[0]) for o in range(10)]
        assert sorted(seen[1]) == [(p, o) for p in sorted(mine[1]) for o in range(10)]

        first.commit()
        first.close()  # leaves the group: the second one takes over every partition
        before = len(seen[1])
        produce(2)
        poll_until(
            [second],
            lambda: (
                {tp.partition for tp in second.assignment()} == {0, 1, 2, 3}
                and len(seen[1]) - before >= 40
            ),
            on_records=lambda _, records: record(1, records),
            commit=True,
        )
        assert second.poll(timeout_ms=300) == {}
    finally:
        second.close()
        first.close()
        producer.close(timeout=5)

    # every partition continues where the group committed: nothing lost, nothing read twice
    assert sorted(seen[1][before:]) == [(p, o) for p in range(4) for o in range(10, 20)]


# --- transactions -----------------------------------------------------------------------


def test_aborted_records_are_invisible_to_read_committed_consumers(
    kafka_settings: KafkaSettings,
    make_topic: Callable[..., str],
    unique_name: Callable[[str], str],
) -> None:
    topic = make_topic(partitions=1)
    producer = make_producer(kafka_settings, transactional_id=unique_name("tx"))
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(3):
            producer.send(topic, value=f"aborted-{i}".encode())
        producer.flush(timeout=20)
        producer.abort_transaction()
        producer.begin_transaction()
        for i in range(3):
            producer.send(topic, value=f"committed-{i}".encode())
        producer.commit_transaction()
    finally:
        producer.close(timeout=5)

    committed = reader(kafka_settings, topic)  # read_committed is the project's default
    uncommitted = reader(kafka_settings, topic, isolation_level="read_uncommitted")
    try:
        seen = [r.value for r in consume(committed, 3)]
        everything = [r.value for r in consume(uncommitted, 6)]
        assert committed.poll(timeout_ms=500) == {}  # and nothing after them
    finally:
        committed.close()
        uncommitted.close()
    assert seen == [b"committed-0", b"committed-1", b"committed-2"]
    # the aborted records are in the log: read_committed hides them, they are not lost in transit
    assert everything == [b"aborted-0", b"aborted-1", b"aborted-2", *seen]


# --- topics -------------------------------------------------------------------------------


def topic_configs(admin: KafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    """The topic-level (non-default) config values of each topic."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    described = admin.describe_configs(resources)["topic"]
    return {name: {k: v["value"] for k, v in described[name].items()} for name in names}


def test_ensure_topics_creates_the_contract_topics_once(
    kafka_settings: KafkaSettings,
    unique_name: Callable[[str], str],
    admin: KafkaAdminClient,
) -> None:
    topics = Topics.with_prefix(unique_name("s") + ".")
    layout = TopicLayout(partitions=3, reply_partitions=5)
    names = list(topics.all().values())

    created = ensure_topics(kafka_settings, topics, layout)

    assert sorted(created) == sorted(names)
    assert set(names) <= set(admin.list_topics())
    partitions = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
    assert partitions == {
        topics.points: 3,
        topics.models: 1,
        topics.predictions: 3,
        topics.scores: 1,
        topics.deadletter: 1,
        topics.requests: 3,
        topics.replies: 5,
        topics.trainer_state: 1,
    }
    configs = topic_configs(admin, names)
    assert configs[topics.models]["cleanup.policy"] == "compact"
    assert configs[topics.trainer_state]["cleanup.policy"] == "compact"
    for name in (topics.points, topics.predictions, topics.scores, topics.deadletter):
        assert configs[name]["cleanup.policy"] == "delete"

    assert ensure_topics(kafka_settings, topics, layout) == []  # idempotent


def test_ensure_topics_creates_only_what_is_missing(
    kafka_settings: KafkaSettings,
    unique_name: Callable[[str], str],
    admin: KafkaAdminClient,
) -> None:
    topics = Topics.with_prefix(unique_name("s") + ".")
    # made by someone else before: kept as it is
    admin.create_topics({topics.points: {"num_partitions": 2, "replication_factor": 1}})
    admin.wait_for_topics([topics.points])

    created = ensure_topics(kafka_settings, topics, TopicLayout(partitions=3, reply_partitions=3))

    assert topics.points not in created
    assert sorted(created) == sorted(set(topics.all().values()) - {topics.points})
    assert len(admin.describe_topics([topics.points])[0]["partitions"]) == 2


# --- dead letters ---------------------------------------------------------------------------


def test_a_dead_letter_keeps_the_original_bytes_and_says_why_and_where_from(
    kafka_settings: KafkaSettings,
    make_topic: Callable[..., str],
) -> None:
    source, deadletter = make_topic(partitions=1), make_topic(partitions=1)
    bad_value = b'{"id": "p-1", "x": [NaN], \xff}'
    producer = make_producer(kafka_settings)
    try:
        producer.send(source, key=b"ok", value=Point(id="p-0", x=[1.0]).to_bytes())
        producer.send(source, key=b"entity-\x00\xfe", value=bad_value, headers=[("h", b"1")])
        producer.send(source, key=b"gone", value=None)  # a tombstone
        producer.flush(timeout=20)

        source_reader = reader(kafka_settings, source)
        try:
            good, bad, tombstone = consume(source_reader, 3)
        finally:
            source_reader.close()
        assert Point.from_bytes(good.value).id == "p-0"

        letters = DeadLetters(producer, deadletter, service="scorer")
        letters.send(bad, "not UTF-8 text: invalid start byte")
        letters.send(tombstone, "expected a JSON object, got an empty value (tombstone)")
        producer.flush(timeout=20)
        assert letters.count == 2
    finally:
        producer.close(timeout=5)

    dl_reader = reader(kafka_settings, deadletter)
    try:
        first, second = consume(dl_reader, 2)
    finally:
        dl_reader.close()
    assert (first.key, first.value) == (b"entity-\x00\xfe", bad_value)  # unchanged bytes
    assert dict(first.headers) == {
        "error": b"not UTF-8 text: invalid start byte",
        "source-topic": source.encode(),
        "source-partition": b"0",
        "source-offset": b"1",
        "service": b"scorer",
    }
    assert (second.key, second.value) == (b"gone", None)
    assert dict(second.headers)["source-offset"] == b"2"
    assert dict(second.headers)["error"].startswith(b"expected a JSON object")
