"""The confluent-kafka driver: `bus.clients.base` on librdkafka (``client=confluent``).

The driver hands out producers (`bus.clients.confluent_producer`) and consumers
(`bus.clients.confluent_consumer`) configured by `bus.clients.confluent_config`;
librdkafka's errors become streamscore's in `bus.clients.confluent_errors`
(`classify`, with what librdkafka raises when the broker fails). Every name the
driver ever exported is importable from here.

How producers report deliveries and how consumers poll and keep positions is told
in their modules.
"""

from __future__ import annotations

from typing import Any

from bus.clients.base import Driver
from bus.clients.confluent_config import (
    ACKS,
    CONSUMER_DEFAULTS,
    CONSUMER_OPTIONS,
    DEFAULT_TRANSACTION_TIMEOUT_MS,
    MAX_POLL_RECORDS,
    OFFSET_RESETS,
    PRODUCER_DEFAULTS,
    PRODUCER_OPTIONS,
    consumer_config,
    producer_config,
)
from bus.clients.confluent_consumer import ConfluentKafkaConsumer
from bus.clients.confluent_errors import classify
from bus.clients.confluent_producer import BLOCK_S, ConfluentKafkaProducer
from bus.settings import KafkaSettings

__all__ = [
    "ACKS",
    "BLOCK_S",
    "CONSUMER_DEFAULTS",
    "CONSUMER_OPTIONS",
    "DEFAULT_TRANSACTION_TIMEOUT_MS",
    "MAX_POLL_RECORDS",
    "OFFSET_RESETS",
    "PRODUCER_DEFAULTS",
    "PRODUCER_OPTIONS",
    "ConfluentDriver",
    "ConfluentKafkaConsumer",
    "ConfluentKafkaProducer",
    "classify",
    "consumer_config",
    "producer_config",
]


class ConfluentDriver(Driver):
    """Producers and consumers on confluent-kafka (librdkafka)."""

    name = "confluent"

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings

    def producer(self, **options: Any) -> ConfluentKafkaProducer:
        """A producer (idempotent, acks=all unless told otherwise)."""
        config = producer_config(self.settings, options)
        producer = ConfluentKafkaProducer(self.settings, config)
        return producer

    def consumer(self, **options: Any) -> ConfluentKafkaConsumer:
        """A consumer with manual commits and read_committed isolation by default."""
        joined = options.get("group_id") is not None
        max_records = options.get("max_poll_records") or MAX_POLL_RECORDS
        config = consumer_config(self.settings, options)
        return ConfluentKafkaConsumer(self.settings, config, joined=joined, max_records=max_records)
