"""Request/reply over the bus: the headers both sides use (`address`), the gateway's
client (`client`) and asynchronous tickets (`tickets`).

The scorer's side only needs `ReplyAddress.of_request` and `ReplyAddress.reply_headers`.
"""

from __future__ import annotations

from bus.reply.address import (
    CORRELATION_ID,
    REPLY_PARTITION,
    REPLY_TOPIC,
    REQUEST_ID,
    HasHeaders,
    ReplyAddress,
    header,
    valid_request_id,
)
from bus.reply.client import (
    ReplyClient,
    ReplyStats,
    ReplyTimeoutError,
    RequestTooLargeError,
    TooManyPendingError,
)
from bus.reply.tickets import (
    ASYNC_PREFIX,
    CLOCK_SKEW_MS,
    FETCH_WINDOW,
    AsyncTicket,
    UnknownTicketError,
    find_reply,
)

__all__ = [
    "ASYNC_PREFIX",
    "CLOCK_SKEW_MS",
    "CORRELATION_ID",
    "FETCH_WINDOW",
    "REPLY_PARTITION",
    "REPLY_TOPIC",
    "REQUEST_ID",
    "AsyncTicket",
    "HasHeaders",
    "ReplyAddress",
    "ReplyClient",
    "ReplyStats",
    "ReplyTimeoutError",
    "RequestTooLargeError",
    "TooManyPendingError",
    "UnknownTicketError",
    "find_reply",
    "header",
    "valid_request_id",
]
