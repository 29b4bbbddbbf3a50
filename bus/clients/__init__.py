"""Kafka clients with the project's defaults, made in one place.

`driver_for` picks the client library (``STREAMSCORE_KAFKA_CLIENT``: kafka-python,
the default, or confluent-kafka, an optional extra) behind the interface in
`bus.clients.base`. Admin stays on kafka-python (``make_admin``).

``make_producer`` / ``make_consumer`` are the kafka-python clients of the code not
yet on the driver interface.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from bus.clients.base import Driver
from bus.clients.kafka_python import CONSUMER_DEFAULTS, PRODUCER_DEFAULTS, connect_error
from bus.settings import KafkaSettings
from streamscore.errors import BusError, ConfigError

__all__ = [
    "CONSUMER_DEFAULTS",
    "PRODUCER_DEFAULTS",
    "driver_for",
    "make_admin",
    "make_consumer",
    "make_producer",
]


def driver_for(settings: KafkaSettings) -> Driver:
    """The driver of the client library ``settings.client`` names."""
    if settings.client == "confluent":
        try:
            from bus.clients.confluent import ConfluentDriver
        except ImportError as exc:
            raise ConfigError(
                "STREAMSCORE_KAFKA_CLIENT=confluent needs the confluent-kafka package: "
                "pip install 'streamscore[confluent]'"
            ) from exc
        return ConfluentDriver(settings)
    from bus.clients.kafka_python import KafkaPythonDriver

    return KafkaPythonDriver(settings)


def make_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """A producer with the project's defaults (idempotent, acks=all, batched)."""
    try:
        return KafkaProducer(**{**settings.client_kwargs(), **PRODUCER_DEFAULTS, **overrides})
    except KafkaError as exc:
        raise connect_error(settings, exc) from exc


def make_consumer(
    settings: KafkaSettings,
    *topics: str,
    group_id: str | None,
    metadata_wait_s: float = 15.0,
    **overrides: Any,
) -> KafkaConsumer:
    """A consumer with manual commits and read_committed isolation.

    With ``topics`` it subscribes (consumer group) once their partitions are known:
    joining a group before the metadata of a just-created topic has arrived would
    leave the member without partitions until the next metadata refresh. Without
    ``topics`` the caller assigns partitions.
    """
    try:
        consumer = KafkaConsumer(
            **{**settings.client_kwargs(), **CONSUMER_DEFAULTS, "group_id": group_id, **overrides}
        )
    except KafkaError as exc:
        raise connect_error(settings, exc) from exc
    if topics:
        deadline = time.monotonic() + metadata_wait_s
        for topic in topics:
            while not consumer.partitions_for_topic(topic):
                if time.monotonic() > deadline:
                    consumer.close()
                    raise BusError(
                        f"topic {topic!r} does not exist on {settings.bootstrap_servers}; "
                        "create it with `streamscore topics`"
                    )
                time.sleep(0.1)
        consumer.subscribe(list(topics))
    return consumer


def make_admin(settings: KafkaSettings, **overrides: Any) -> KafkaAdminClient:
    """An admin client; raises BusError when the cluster cannot be reached."""
    try:
        return KafkaAdminClient(**{**settings.client_kwargs(), **overrides})
    except KafkaError as exc:
        raise connect_error(settings, exc) from exc
