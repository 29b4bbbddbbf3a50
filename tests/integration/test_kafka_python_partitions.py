"""kafka-python's `partitions_for`: fresh answers from a metadata request for that topic alone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from bus.clients import driver_for, make_admin
from bus.clients.base import Consumer, TopicPartition
from bus.settings import KafkaSettings


@pytest.fixture
def consumer(kafka_settings: KafkaSettings) -> Iterator[Consumer]:
    made = driver_for(replace(kafka_settings, client="kafka-python")).consumer(group_id=None)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def no_cluster_wide_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    """``KafkaConsumer.topics()`` (metadata of every topic) fails from here on."""

    def refuse(self: Any) -> Any:
        raise AssertionError("metadata of every topic asked for")

    monkeypatch.setattr("kafka.KafkaConsumer.topics", refuse)


def topic_names(kafka_settings: KafkaSettings) -> set[str]:
    admin = make_admin(kafka_settings)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


@pytest.mark.usefixtures("no_cluster_wide_metadata")
def test_partitions_for_asks_for_the_one_topic_and_sees_new_topics_at_once(
    make_topic: Callable[..., str], consumer: Consumer
) -> None:
    topic = make_topic(partitions=3)
    assert consumer.partitions_for(topic) == [0, 1, 2]
    later = make_topic(partitions=2)  # created after the consumer asked for other topics
    assert consumer.partitions_for(later) == [0, 1]


@pytest.mark.usefixtures("no_cluster_wide_metadata")
def test_a_missing_topic_has_no_partitions_and_is_not_created(
    kafka_settings: KafkaSettings, unique_name: Callable[[str], str], consumer: Consumer
) -> None:
    missing = unique_name("missing")
    assert consumer.partitions_for(missing) == []
    assert consumer.partitions_for(missing) == []
    assert missing not in topic_names(kafka_settings)


def test_a_consumer_reading_one_topic_answers_for_another(
    make_topic: Callable[..., str], consumer: Consumer
) -> None:
    read, other = make_topic(partitions=1), make_topic(partitions=4)
    consumer.assign([TopicPartition(read, 0)])
    consumer.poll(0.1)
    assert consumer.partitions_for(other) == [0, 1, 2, 3]
    assert consumer.partitions_for(read) == [0]
