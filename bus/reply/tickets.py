"""Asynchronous requests: the ticket that says where a reply will be, and finding it later.

`ReplyClient.submit` publishes a request to a partition of ``requests`` it picks
and names, as the reply address, a partition of ``replies``; the `AsyncTicket`
holds both partitions, the send time and the correlation id. Anyone can later
find the reply with `find_reply`: a short-lived consumer, no group, reads the
reply partition back from its end, in growing windows, until it finds the
correlation id or reaches records older than the send time. A reply not found
there yet is pending only if its request is on ``requests``: a well-formed token
that was never issued is unknown, not pending.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from bus.clients.base import Consumer, Driver, Record, TopicPartition
from bus.reply.address import CORRELATION_ID, header
from core.errors import BusError

log = logging.getLogger(__name__)

#: Correlation ids of asynchronous requests start with this; the reply consumer of
#: the partition they land on leaves them for `find_reply`.
ASYNC_PREFIX = "async-"

#: How far before the send time an asynchronous lookup starts reading, so that a
#: scorer whose clock is behind the gateway's is still found.
CLOCK_SKEW_MS = 10_000

#: How many of the newest records a lookup reads first; each further window back
#: is four times larger.
FETCH_WINDOW = 1000

#: How long one poll of a lookup waits for records.
POLL_S = 0.1


class UnknownTicketError(BusError):
    """An asynchronous ticket that does not name a request of this bus."""


_TOKEN = re.compile(r"^(\d{1,6})\.(\d{1,6})\.(\d{1,15})\.([0-9A-Za-z_-]{1,64})$")


@dataclass(frozen=True, slots=True)
class AsyncTicket:
    """Where and when an asynchronous request was sent: enough to find its reply later."""

    partition: int  # of ``replies``
    request_partition: int  # of ``requests``
    sent_ms: int
    correlation_id: str

    def token(self) -> str:
        """A URL-safe text form: ``<reply partition>.<request partition>.<send ms>.<id>``."""
        key = self.correlation_id[len(ASYNC_PREFIX) :]
        return f"{self.partition}.{self.request_partition}.{self.sent_ms}.{key}"

    @classmethod
    def parse(cls, token: str) -> AsyncTicket:
        """Read a `token`; raise UnknownTicketError if it is not one."""
        match = _TOKEN.match(token)
        if match is None:
            raise UnknownTicketError(f"{token[:80]!r} is not a request token of this gateway")
        return cls(int(match[1]), int(match[2]), int(match[3]), ASYNC_PREFIX + match[4])


def _checked_partition(consumer: Consumer, topic: str, partition: int) -> TopicPartition:
    if partition not in consumer.partitions_for(topic):
        raise UnknownTicketError(
            f"{topic!r} has no partition {partition}: the token is not one of this gateway's"
        )
    return TopicPartition(topic, partition)


def find_reply(
    driver: Driver, ticket: AsyncTicket, replies_topic: str, requests_topic: str, timeout_s: float
) -> Record | None:
    """The reply record of ``ticket``, or None while its request waits for one.

    Raises `UnknownTicketError` when a partition the ticket names does not exist,
    or when neither the reply nor the request is on the bus (never issued, or
    gone with the topics' retention).
    """
    deadline = time.monotonic() + timeout_s
    consumer = driver.consumer(group_id=None, max_poll_records=500, fetch_max_wait_ms=20)
    try:
        replies = _checked_partition(consumer, replies_topic, ticket.partition)
        requests = _checked_partition(consumer, requests_topic, ticket.request_partition)
        found = _find(consumer, replies, ticket, deadline)
        if found is not None:
            return found
        if _find(consumer, requests, ticket, deadline) is None and time.monotonic() < deadline:
            raise UnknownTicketError(
                f"no request {ticket.token()!r} was sent (or it is past the topics' "
                "retention): send the request again"
            )
        return None
    except UnknownTicketError:
        raise
    except BusError as exc:
        raise BusError(f"cannot read {replies_topic!r}: {exc}; retry later") from exc
    finally:
        close_quietly(consumer)


def _find(
    consumer: Consumer, tp: TopicPartition, ticket: AsyncTicket, deadline: float
) -> Record | None:
    """Read ``tp`` back from its end in growing windows until the id or the send time."""
    consumer.assign([tp])
    high = consumer.end_offsets([tp])[tp]
    wanted = ticket.correlation_id.encode()
    oldest_ms = ticket.sent_ms - CLOCK_SKEW_MS
    window = FETCH_WINDOW
    while high > 0:
        low = max(0, high - window)
        consumer.seek(tp, low)
        before_send = False
        while consumer.position(tp) < high:
            if time.monotonic() >= deadline:
                return None
            for record in consumer.poll(POLL_S):
                if record.tp != tp or record.offset >= high:
                    continue
                if header(record, CORRELATION_ID) == wanted:
                    return record
                before_send = before_send or record.timestamp < oldest_ms
        if before_send:
            return None  # the window starts before the request was sent
        high, window = low, window * 4
    return None


def close_quietly(consumer: Consumer) -> None:
    """Close ``consumer``; a failure to close is only logged at debug level."""
    try:
        consumer.close()
    except BusError as exc:
        log.debug("closing a consumer: %s", exc)
