"""The kafka-python driver: `bus.clients.base` on kafka-python (the default client).

The driver hands out producers (`bus.clients.kafka_python_producer`) and consumers
(`bus.clients.kafka_python_consumer`) configured by `bus.clients.kafka_python_config`;
kafka-python's errors become streamscore's in `bus.clients.kafka_python_errors`
(`classify`, with what kafka-python raises when the broker fails). Consumers
decode record batches with `bus.clients.kafka_python_fetch`. Every name the
driver ever exported is importable from here; `make_producer` and `make_consumer`
are plain kafka-python clients with the project's defaults, for tools that watch
the bus from outside.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from bus.clients.base import Driver
from bus.clients.kafka_python_config import (
    ACKS,
    CONSUMER_DEFAULTS,
    CONSUMER_OPTIONS,
    DEFAULT_TRANSACTION_TIMEOUT_MS,
    OFFSET_RESETS,
    PRODUCER_DEFAULTS,
    PRODUCER_OPTIONS,
    consumer_config,
    producer_config,
)
from bus.clients.kafka_python_consumer import KafkaPythonConsumer
from bus.clients.kafka_python_errors import classify, connect_error
from bus.clients.kafka_python_producer import KafkaPythonProducer
from bus.settings import KafkaSettings
from core.errors import BusError

__all__ = [
    "ACKS",
    "CONSUMER_DEFAULTS",
    "CONSUMER_OPTIONS",
    "DEFAULT_TRANSACTION_TIMEOUT_MS",
    "OFFSET_RESETS",
    "PRODUCER_DEFAULTS",
    "PRODUCER_OPTIONS",
    "KafkaPythonConsumer",
    "KafkaPythonDriver",
    "KafkaPythonProducer",
    "classify",
    "connect_error",
    "consumer_config",
    "make_consumer",
    "make_producer",
    "producer_config",
]


class KafkaPythonDriver(Driver):
    """Producers and consumers on kafka-python."""

    name = "kafka-python"

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings

    def producer(self, **options: Any) -> KafkaPythonProducer:
        """A producer (idempotent, acks=all unless told otherwise)."""
        config = producer_config(self.settings, options)
        try:
            client = KafkaProducer(**config)
        except KafkaError as exc:
            raise connect_error(self.settings, exc) from exc
        return KafkaPythonProducer(client, config)

    def consumer(self, **options: Any) -> KafkaPythonConsumer:
        """A consumer with manual commits and read_committed isolation by default."""
        config = consumer_config(self.settings, options)
        try:
            client = KafkaConsumer(**config)
        except KafkaError as exc:
            raise connect_error(self.settings, exc) from exc
        return KafkaPythonConsumer(client, config)


# --- plain clients, for tools that watch the bus from outside ------------------------


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
