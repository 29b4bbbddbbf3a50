"""Sending a bad record to the dead-letter topic with its reason and origin."""

from __future__ import annotations

import logging
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger(__name__)

MAX_REASON_BYTES = 4096
LOG_FIRST = 20  # dead letters logged one by one; after that, every LOG_EVERY-th
LOG_EVERY = 1000


Headers = list[tuple[str, bytes]]


def deadletter_headers(record: ConsumerRecord, reason: str, service: str) -> Headers:
    """The contract's headers: ``error`` and where the record came from."""
    return [
        ("error", _clip(reason, MAX_REASON_BYTES)),
        ("source-topic", record.topic.encode()),
        ("source-partition", str(record.partition).encode()),
        ("source-offset", str(record.offset).encode()),
        ("service", service.encode()),
    ]


def _clip(text: str, limit: int) -> bytes:
    """``text`` as UTF-8, cut to ``limit`` bytes without splitting a character."""
    return text.encode()[:limit].decode(errors="ignore").encode()


class DeadLetters:
    """Writes bad records, unchanged, to the dead-letter topic, and counts them.

    ``producer`` is whichever producer the service writes its output with, so in
    exactly-once mode a dead letter is part of the same transaction.
    """

    def __init__(self, producer: Any, topic: str, service: str) -> None:
        self._producer = producer
        self._topic = topic
        self._service = service
        self.count = 0

    def send(self, record: ConsumerRecord, reason: str) -> None:
        """Publish ``record`` as it came, with ``reason`` in the ``error`` header."""
        if self.count < LOG_FIRST or (self.count + 1) % LOG_EVERY == 0:
            log.warning(
                "dead letter #%d %s[%d]@%d: %s",
                self.count + 1,
                record.topic,
                record.partition,
                record.offset,
                reason,
            )
        value = record.value if record.value is not None or record.key is not None else b""
        self._producer.send(
            self._topic,
            key=record.key,
            value=value,
            headers=deadletter_headers(record, reason, self._service),
        )
        self.count += 1
