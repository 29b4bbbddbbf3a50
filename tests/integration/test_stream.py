"""The stream kernel on the real broker, through each client driver, in both delivery modes."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest

from bus.clients import driver_for
from bus.clients.base import Driver, Record, TopicPartition
from bus.settings import KafkaSettings
from bus.stream import Outcome, Step, StreamConfig, StreamRunner, StreamStats
from bus.table import Table
from core.shutdown import StopFlag

DELIVERIES = ["at-least-once", "exactly-once"]
COUNT = 600
RUN_TIMEOUT_S = 60.0


@pytest.fixture(params=["kafka-python", "confluent"])
def driver(request: pytest.FixtureRequest, kafka_settings: KafkaSettings) -> Driver:
    """Each client driver, on the session's broker."""
    return driver_for(replace(kafka_settings, client=request.param))


@dataclass
class PassThrough(Step):
    """Copies every value to ``target`` keyed as it came; ``poison`` raises; stops at ``want``."""

    target: str
    want: int
    stop: StopFlag
    seen: int = 0

    def process(self, records: list[Record]) -> Outcome:
        for record in records:
            if record.value == b"poison":
                raise ValueError(f"poison at offset {record.offset}")
        outcome = Outcome(context=len(records))
        return outcome.add(self.target, [r.value for r in records], [r.key for r in records])

    def committed(self, outcome: Outcome) -> None:
        self.seen += outcome.context or 0
        if self.seen >= self.want:
            self.stop.set()


@pytest.fixture
def watchdog() -> Iterator[Callable[[StopFlag], None]]:
    """Stop a runner after RUN_TIMEOUT_S whatever happens (the test then fails on counts)."""
    timers: list[threading.Timer] = []

    def arm(stop: StopFlag) -> None:
        timer = threading.Timer(RUN_TIMEOUT_S, stop.set)
        timer.daemon = True
        timer.start()
        timers.append(timer)

    yield arm
    for timer in timers:
        timer.cancel()


def produce(driver: Driver, topic: str, values: list[bytes]) -> None:
    producer = driver.producer()
    try:
        for i, value in enumerate(values):
            producer.send(topic, value, key=b"k%d" % i)
        producer.flush()
    finally:
        producer.close()


def read_all(driver: Driver, topic: str) -> list[Record]:
    """Every committed record of ``topic`` (read_committed, to its end)."""
    with Table(driver, topic) as table:
        table.open()
        return table.catch_up(timeout_s=30)


def run(
    driver: Driver,
    delivery: str,
    step: PassThrough,
    *,
    source: str,
    deadletter: str,
    unique_name: Callable[[str], str],
) -> tuple[StreamStats, str]:
    """Run ``step`` over ``source`` until it stops; the stats and the group id."""
    group = unique_name("g")
    config = StreamConfig(
        topics=(source,),
        group_id=group,
        service="stream-test",
        delivery=delivery,
        transactional_id=unique_name("tx") if delivery == "exactly-once" else None,
        deadletter_topic=deadletter,
        max_batch=100,
        poll_timeout_s=0.2,
    )
    return StreamRunner(driver, config, step, stop=step.stop).run(), group


def committed_offsets(driver: Driver, group: str, topic: str) -> dict[TopicPartition, int | None]:
    consumer = driver.consumer(group_id=group)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for(topic)]
        return consumer.committed(tps)
    finally:
        consumer.close()


def end_offsets(driver: Driver, topic: str) -> dict[TopicPartition, int]:
    consumer = driver.consumer(group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for(topic)]
        return consumer.end_offsets(tps)
    finally:
        consumer.close()


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_pass_through_copies_every_record_and_commits(
    driver: Driver,
    delivery: str,
    make_topic: Callable[..., str],
    unique_name: Callable[[str], str],
    watchdog: Callable[[StopFlag], None],
) -> None:
    source, target, deadletter = make_topic(3), make_topic(3), make_topic(1)
    values = [b"value-%d" % i for i in range(COUNT)]
    produce(driver, source, values)
    step = PassThrough(target, COUNT, StopFlag())
    watchdog(step.stop)
    stats, group = run(
        driver, delivery, step, source=source, deadletter=deadletter, unique_name=unique_name
    )

    copied = read_all(driver, target)
    assert Counter(r.value for r in copied) == Counter(values)
    assert {r.value: r.key for r in copied}[b"value-17"] == b"k17"
    assert committed_offsets(driver, group, source) == end_offsets(driver, source)
    assert stats.records == stats.outputs == COUNT
    assert stats.faults == stats.deadletters == 0
    assert read_all(driver, deadletter) == []


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_a_poison_record_is_dead_lettered_and_the_rest_pass(
    driver: Driver,
    delivery: str,
    make_topic: Callable[..., str],
    unique_name: Callable[[str], str],
    watchdog: Callable[[StopFlag], None],
) -> None:
    source, target, deadletter = make_topic(1), make_topic(2), make_topic(1)
    values = [b"value-%d" % i for i in range(50)]
    produce(driver, source, [*values[:20], b"poison", *values[20:]])
    step = PassThrough(target, len(values), StopFlag())
    watchdog(step.stop)
    stats, group = run(
        driver, delivery, step, source=source, deadletter=deadletter, unique_name=unique_name
    )

    assert Counter(r.value for r in read_all(driver, target)) == Counter(values)
    (letter,) = read_all(driver, deadletter)
    assert (letter.key, letter.value) == (b"k20", b"poison")
    assert letter.header("error") == b"ValueError: poison at offset 20"
    assert letter.header("source-topic") == source.encode()
    assert letter.header("source-partition") == b"0"
    assert letter.header("source-offset") == b"20"
    assert letter.header("service") == b"stream-test"
    assert committed_offsets(driver, group, source) == {TopicPartition(source, 0): 51}
    assert stats.deadletters == 1
