"""The headers of request/reply over the bus, as both sides read and write them.

A request on ``requests`` carries ``correlation-id`` (ties the reply to it),
``reply-topic`` and ``reply-partition`` (where the answer goes, an ASCII integer)
and, when the caller has one, ``request-id`` (the HTTP ``X-Request-Id``, for the
logs). The reply echoes ``correlation-id`` and ``request-id``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from core.errors import MessageError

CORRELATION_ID = "correlation-id"
REPLY_TOPIC = "reply-topic"
REPLY_PARTITION = "reply-partition"
REQUEST_ID = "request-id"

#: What a request id may hold: printable ASCII, no spaces, at most 128 characters.
_REQUEST_ID = re.compile(r"^[!-~]{1,128}$")


class HasHeaders(Protocol):
    """Anything with Kafka headers: a `Record`, or a record of a client library."""

    @property
    def headers(self) -> Iterable[tuple[str, bytes | None]] | None: ...


def header(record: HasHeaders, name: str) -> bytes | None:
    """The value of the first header called ``name``, or None."""
    for key, value in record.headers or ():
        if key == name:
            return bytes(value) if value is not None else None
    return None


def valid_request_id(text: str | None) -> bool:
    """True for a request id that may travel in headers and logs (printable ASCII, 1-128)."""
    return text is not None and _REQUEST_ID.match(text) is not None


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    """Where the answer to a request goes, and the ids that tie the two together."""

    correlation_id: str
    topic: str
    partition: int
    request_id: str | None = None

    def request_headers(self) -> list[tuple[str, bytes]]:
        """The headers a request carries."""
        headers = [
            (CORRELATION_ID, self.correlation_id.encode()),
            (REPLY_TOPIC, self.topic.encode()),
            (REPLY_PARTITION, str(self.partition).encode()),
        ]
        if self.request_id is not None:
            headers.append((REQUEST_ID, self.request_id.encode()))
        return headers

    def reply_headers(self) -> list[tuple[str, bytes]]:
        """The headers a reply carries: the correlation id and request id, echoed."""
        headers = [(CORRELATION_ID, self.correlation_id.encode())]
        if self.request_id is not None:
            headers.append((REQUEST_ID, self.request_id.encode()))
        return headers

    @classmethod
    def of_request(cls, record: HasHeaders) -> ReplyAddress:
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
        raw_id = header(record, REQUEST_ID)
        request_id = raw_id.decode("ascii", "replace") if raw_id else None
        if not valid_request_id(request_id):
            request_id = None  # only for the logs: a bad one is left out, never refused
        return cls(values[CORRELATION_ID], values[REPLY_TOPIC], partition, request_id)
