"""The confluent-kafka driver: `bus.clients.base` on librdkafka (``client=confluent``).

The driver hands out producers (`bus.clients.confluent_producer`) and consumers
(`bus.clients.confluent_consumer`) configured by `bus.clients.confluent_config`;
librdkafka's errors become streamscore's in `bus.clients.confluent_errors`
(`classify`, with what librdkafka raises when the broker fails). Every name the
driver ever exported is importable from here.

Producers report deliveries only when they fail (``delivery.report.only.error``):
the callback keeps the error, and the next ``flush`` / ``commit_transaction``
raises it, classified. A full local queue (``BufferError``) is drained by serving
the client's callbacks, then the record is queued again.

Consumers take what librdkafka has prefetched without waiting (``consume`` with
no timeout) and block only when nothing is there, for one message: a poll returns
as soon as there is something to return, like kafka-python's. Chunks are built
straight from the messages, column by column.

Positions: librdkafka's own position is the last record delivered + 1. Older
librdkafka releases leave it on the commit marker that ends a transaction, so a
reader of a topic written transactionally would never see its position reach
the end offset; and ``consume`` (2.16) moves it one past the offset of a
partition-EOF event, past the end. So the driver asks for partition-EOF events
(``enable.partition.eof``), which carry the offset the fetcher reached, and
`position` reports that offset until a record of the partition comes. Before
anything was read, librdkafka has no position at all; `position` then reports
where the next fetch starts (a seek, the committed offset, or the reset policy).
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
