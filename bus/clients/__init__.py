"""Kafka clients with the project's defaults, made in one place.

`driver_for` picks the client library (``STREAMSCORE_KAFKA_CLIENT``: kafka-python,
the default, or confluent-kafka, an optional extra) behind the interface in
`bus.clients.base`. Admin stays on kafka-python (``make_admin``).

``make_producer`` / ``make_consumer`` (from the kafka-python driver) are plain
kafka-python clients with the project's settings, for tools that watch the bus from
outside (the chaos verifier, benchmark loaders, tests that read as any user would).
No service uses them: services get their clients from a driver.
"""

from __future__ import annotations

from typing import Any

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from bus.clients.base import Driver
from bus.clients.kafka_python import (
    CONSUMER_DEFAULTS,
    PRODUCER_DEFAULTS,
    connect_error,
    make_consumer,
    make_producer,
)
from bus.settings import KafkaSettings
from core.errors import ConfigError

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


def make_admin(settings: KafkaSettings, **overrides: Any) -> KafkaAdminClient:
    """An admin client; raises BusError when the cluster cannot be reached."""
    try:
        return KafkaAdminClient(**{**settings.client_kwargs(), **overrides})
    except KafkaError as exc:
        raise connect_error(settings, exc) from exc
