"""Request/reply over the bus: the headers both sides use."""

from __future__ import annotations

from dataclasses import dataclass

from kafka.consumer.fetcher import ConsumerRecord

from streamscore.errors import MessageError

CORRELATION_ID = "correlation-id"
REPLY_TOPIC = "reply-topic"
REPLY_PARTITION = "reply-partition"


def header(record: ConsumerRecord, name: str) -> bytes | None:
    """The value of the first header called ``name``, or None."""
    for key, value in record.headers or ():
        if key == name:
            return bytes(value) if value is not None else None
    return None


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    """Where the answer to a request goes, and the id that ties the two together."""

    correlation_id: str
    topic: str
    partition: int

    def request_headers(self) -> list[tuple[str, bytes]]:
        """The headers a request carries."""
        return [
            (CORRELATION_ID, self.correlation_id.encode()),
            (REPLY_TOPIC, self.topic.encode()),
            (REPLY_PARTITION, str(self.partition).encode()),
        ]

    def reply_headers(self) -> list[tuple[str, bytes]]:
        """The headers a reply carries: the correlation id, echoed."""
        return [(CORRELATION_ID, self.correlation_id.encode())]

    @classmethod
    def of_request(cls, record: ConsumerRecord) -> ReplyAddress:
        """Read the reply address from a request's headers, or raise MessageError."""
        values = {}
        for name in (CORRELATION_ID, REPLY_TOPIC, REPLY_PARTITION):
            raw = header(record, name)
            if not raw:
                raise MessageError(f"request header {name!r} is missing")
            try:
                values[name] = raw.decode("ascii")
            except UnicodeDecodeError:
                raise MessageError(f"request header {name!r} is not ASCII") from None
        try:
            partition = int(values[REPLY_PARTITION])
        except ValueError:
            raise MessageError(
                f"request header {REPLY_PARTITION!r}: expected an integer, "
                f"got {values[REPLY_PARTITION]!r}"
            ) from None
        if partition < 0:
            raise MessageError(f"request header {REPLY_PARTITION!r}: must be >= 0")
        return cls(values[CORRELATION_ID], values[REPLY_TOPIC], partition)
