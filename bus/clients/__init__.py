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
from kafka.errors import KafkaConfigurationError, KafkaError

from bus.clients.base import Driver
from bus.settings import KafkaSettings
from streamscore.errors import BusError, ConfigError, StreamscoreError

PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 5,
    "batch_size": 256 * 1024,
    "max_request_size": 4 * 1024 * 1024,
    "retries": 2**31 - 1,
    "enable_idempotence": True,
}

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "isolation_level": "read_committed",
    "max_poll_records": 5000,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "fetch_max_wait_ms": 100,
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 2_000,
    "metadata_max_age_ms": 30_000,
}


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


def _client_error(settings: KafkaSettings, exc: Exception) -> StreamscoreError:
    if isinstance(exc, KafkaConfigurationError):
        return ConfigError(f"bad Kafka client setting: {exc}")
    return BusError(
        f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}. "
        "Is the broker up? (`streamscore kafka up` starts a local one)"
    )


def make_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """A producer with the project's defaults (idempotent, acks=all, batched)."""
    try:
        return KafkaProducer(**{**settings.client_kwargs(), **PRODUCER_DEFAULTS, **overrides})
    except KafkaError as exc:
        raise _client_error(settings, exc) from exc


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
        raise _client_error(settings, exc) from exc
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
        raise _client_error(settings, exc) from exc
