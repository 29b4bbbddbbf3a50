"""Sending a bad record to the dead-letter topic with its reason and origin.

A dead letter is the original key and value bytes, unchanged, with the headers
``error`` (the reason), ``source-topic``, ``source-partition``, ``source-offset``
and ``service``. One that would not fit the broker's record size limit
(``max_bytes``, key + value + headers + overhead) is cut to fit: its value is
truncated, the headers ``truncated: true`` and ``original-size`` (the original
value's size in bytes) are added and the reason says so. Cutting keeps a poison
record from failing twice: once in its service, and again on its way out.
"""

from __future__ import annotations

import logging

from bus.clients.base import Producer, Record

log = logging.getLogger(__name__)

MAX_REASON_BYTES = 4096
#: Largest record written as is (key + value + headers + overhead): just under the
#: broker's default message.max.bytes (1,048,588), so anything the broker took fits again.
MAX_DEADLETTER_BYTES = 1_048_000
#: What a record costs beyond its key, value and headers (record and batch framing).
RECORD_OVERHEAD = 128
LOG_FIRST = 20  # dead letters logged one by one; after that, every LOG_EVERY-th
LOG_EVERY = 1000


Headers = list[tuple[str, bytes]]


def deadletter_headers(record: Record, reason: str, service: str) -> Headers:
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


def _headers_size(headers: Headers) -> int:
    return sum(len(name) + len(value) + 8 for name, value in headers)


class DeadLetters:
    """Writes bad records, unchanged (or cut to fit), to the dead-letter topic, and counts them.

    ``producer`` is whichever producer the service writes its output with, so in
    exactly-once mode a dead letter is part of the same transaction; it is a public
    attribute, so a loop that replaces its producer keeps its count.
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        service: str,
        *,
        max_bytes: int = MAX_DEADLETTER_BYTES,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.service = service
        self.max_bytes = max_bytes
        self.count = 0
        self.truncated = 0

    def send(self, record: Record, reason: str) -> None:
        """Publish ``record`` as it came, with ``reason`` in the ``error`` header."""
        key = record.key
        value = record.value if record.value is not None or key is not None else b""
        headers = deadletter_headers(record, reason, self.service)
        size = len(key or b"") + len(value or b"") + _headers_size(headers) + RECORD_OVERHEAD
        if size > self.max_bytes:
            key, value, headers, reason = self._cut(record, reason, value or b"")
        if self.count < LOG_FIRST or (self.count + 1) % LOG_EVERY == 0:
            log.warning(
                "dead letter #%d %s[%d]@%d: %s",
                self.count + 1,
                record.topic,
                record.partition,
                record.offset,
                reason,
            )
        self.producer.send(self.topic, value, key=key, headers=headers)
        self.count += 1

    def _cut(
        self, record: Record, reason: str, value: bytes
    ) -> tuple[bytes | None, bytes, Headers, str]:
        """Key, value, headers and reason of a dead letter that fits ``max_bytes``.

        The value is truncated; in the absurd case of a key that alone is over the
        limit, the key is truncated too and the value dropped.
        """
        original = len(value)
        key = record.key
        # size the headers with the longest note the reason can get
        note = self._note(original, original)
        extra = [("truncated", b"true"), ("original-size", str(original).encode())]
        fixed = _headers_size(deadletter_headers(record, reason + note, self.service) + extra)
        room = self.max_bytes - len(key or b"") - fixed - RECORD_OVERHEAD
        if room < 0 and key is not None:
            key, room = key[: max(0, len(key) + room)], 0
        kept = value[: max(0, room)]
        reason += self._note(original, len(kept))
        self.truncated += 1
        return key, kept, deadletter_headers(record, reason, self.service) + extra, reason

    def _note(self, original: int, kept: int) -> str:
        """What the reason gets appended when the value is cut."""
        return (
            f" (dead letter cut to fit {self.max_bytes} bytes: "
            f"value of {original} bytes truncated to {kept})"
        )
