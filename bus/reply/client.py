"""The gateway's side of request/reply: publish a request, wait for its reply.

Each `ReplyClient` (one per gateway worker process) reads **one partition of
``replies`` that it assigns itself** (`Consumer.assign`, no consumer group): the
partition is chosen from the worker's slot (its process id unless told), modulo
the partition count. Its requests name that partition as their reply address,
so the reply always comes back to a process that reads it: no rebalance can
take it away, and no request ever waits for a partition to be owned. Two
workers whose slots fall on one partition both read it; each takes the replies
it waits for and drops the others (counted as ``late_replies``).

The client is ready (`ready`) once its consumer is positioned at the end of its
partition and Kafka answered recently; `wait_ready` lets the worker hold back
until then, so it never takes a request it cannot answer. A caller never sleeps
or polls: it waits on an event the reply thread sets, and no lock is held while
a client talks to the broker. Requests sent at the same time go out in the
producer's batches, replies come back in the consumer's fetches. The reply thread
rides through transient bus faults (a broker restart) and makes a new consumer
after any other failure, resuming where it stopped reading; a flusher thread
collects the producer's delivery results every `FLUSH_EVERY_S` at most, so a
failed delivery is logged (its caller gets no reply in time: a timeout).

The pieces: `bus.reply.reader` (the reply thread), `bus.reply.publisher` (the
producer and its flusher), `bus.reply.pending` (the waiting requests) and
`bus.reply.errors`; this module puts them together.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from bus.clients.base import Driver, Producer, Record
from bus.messages import InferReply, InferRequest
from bus.reply.address import ReplyAddress
from bus.reply.errors import ReplyTimeoutError, RequestTooLargeError, TooManyPendingError
from bus.reply.pending import PendingReplies, parse_reply
from bus.reply.publisher import (
    FLUSH_EVERY_S,
    FLUSH_TIMEOUT_S,
    RequestPublisher,
    encode_request,
)
from bus.reply.reader import BACKOFF_S, MAX_BACKOFF_S, POLL_S, ReplyReader
from bus.reply.tickets import ASYNC_PREFIX, AsyncTicket, find_reply
from core.errors import BusError
from core.shutdown import StopFlag

__all__ = [
    "BACKOFF_S",
    "FLUSH_EVERY_S",
    "FLUSH_TIMEOUT_S",
    "MAX_BACKOFF_S",
    "POLL_S",
    "ReplyClient",
    "ReplyStats",
    "ReplyTimeoutError",
    "RequestTooLargeError",
    "TooManyPendingError",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplyStats:
    """Counters of one `ReplyClient` (one process)."""

    pending: int
    sent: int
    replies: int
    timeouts: int
    late_replies: int
    rejected: int
    partitions: int


class ReplyClient:
    """Publishes inference requests and waits for, or later finds, their replies.

    One per process: `start` makes the producer and starts the reply and flusher
    threads in the calling process (and again in a forked child, which never
    reuses its parent's clients); the reply thread makes its own consumer.
    ``slot`` picks the reply partition (None: the process id); ``clock_ms`` (wall
    clock, for send times) and ``new_id`` are parameters so tests can fix them.
    Requests leave after ``linger_ms``; the flusher collects their deliveries at
    most every ``flush_every_s`` (a flush per request would wake it, and force a
    produce request, for every one).
    """

    def __init__(
        self,
        driver: Driver,
        requests_topic: str,
        replies_topic: str,
        *,
        slot: int | None = None,
        max_pending: int = 1000,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        probe_interval_s: float = 2.0,
        linger_ms: int = 1,
        flush_every_s: float = FLUSH_EVERY_S,
    ) -> None:
        self.driver = driver
        self.requests_topic = requests_topic
        self.replies_topic = replies_topic
        self.slot = slot
        self.max_pending = max_pending
        self._clock_ms = clock_ms
        self._new_id = new_id
        self._probe_interval_s = probe_interval_s
        self._start_lock = threading.Lock()
        self._pending = PendingReplies(max_pending)
        self._publisher = RequestPublisher(
            driver, requests_topic, linger_ms=linger_ms, flush_every_s=flush_every_s
        )
        self._stop = StopFlag()
        self._reader = self._new_reader()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def _new_reader(self) -> ReplyReader:
        return ReplyReader(
            self.driver,
            self.replies_topic,
            self._pending.deliver,
            self._stop,
            slot=self.slot,
            probe_interval_s=self._probe_interval_s,
        )

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> ReplyClient:
        """Make the producer, start the reply and flusher threads in this process (idempotent)."""
        if self._pid == os.getpid():
            return self
        with self._start_lock:
            if self._pid == os.getpid():
                return self
            stop = StopFlag()
            self._publisher.start(stop)
            self._pending.clear()
            self._stop = stop
            self._reader = self._new_reader()
            self._thread = threading.Thread(
                target=self._reader.run, name=f"replies-{self.replies_topic}", daemon=True
            )
            self._thread.start()
            self._pid = os.getpid()
        return self

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until requests can be answered (the reply partition is read); True if so."""
        self._started()
        deadline = time.monotonic() + timeout_s
        if not self._reader.positioned.wait(timeout_s):
            return False
        while not self.reachable() and time.monotonic() < deadline:
            self._stop.wait(0.01)
        return self.ready()

    def close(self) -> None:
        """Stop the threads and close the clients (this process only)."""
        if self._pid != os.getpid():
            return
        self._stop.set()
        self._publisher.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pid = None

    # --- what callers use --------------------------------------------------------------

    def call(
        self, request: InferRequest, timeout_s: float, *, request_id: str | None = None
    ) -> InferReply:
        """Publish ``request`` and wait for its reply.

        Raises `ReplyTimeoutError` after ``timeout_s``, `TooManyPendingError` when this
        process waits for ``max_pending`` replies already, and `BusError` at once when
        Kafka cannot be reached or the reply partition is not read yet.
        """
        producer = self._started()
        deadline = time.monotonic() + timeout_s
        value = encode_request(request)
        partition = self._reader.partition
        if partition is None or not self.reachable():
            raise BusError(
                f"this gateway worker does not read {self.replies_topic!r} yet, or Kafka "
                f"did not answer it for {3 * self._probe_interval_s:g} s; retry later"
            )
        correlation_id = self._new_id()
        waiter = self._pending.add(correlation_id)
        address = ReplyAddress(correlation_id, self.replies_topic, partition, request_id)
        try:
            self._publisher.send(producer, address, value, None)
        except BusError:
            self._pending.forget(correlation_id)
            raise
        if not waiter.event.wait(max(0.0, deadline - time.monotonic())):
            if self._pending.expire(correlation_id):
                raise ReplyTimeoutError(
                    f"no reply within {timeout_s:g} s: the scorer may be down or overloaded; "
                    "retry later"
                )
            waiter.event.wait()  # the reply came as the time ran out: it is being handed over
        if waiter.error is not None:
            raise waiter.error
        assert waiter.reply is not None
        return waiter.reply

    def submit(
        self, request: InferRequest, timeout_s: float, *, request_id: str | None = None
    ) -> AsyncTicket:
        """Publish ``request`` for a later `fetch`; return once Kafka has it."""
        producer = self._started()
        value = encode_request(request)
        correlation_id = ASYNC_PREFIX + self._new_id()
        replies = self._publisher.partition_count(producer, self.replies_topic)
        requests = self._publisher.partition_count(producer, self.requests_topic)
        ticket = AsyncTicket(
            random.randrange(replies), random.randrange(requests), self._clock_ms(), correlation_id
        )
        address = ReplyAddress(correlation_id, self.replies_topic, ticket.partition, request_id)
        self._publisher.send(producer, address, value, ticket.request_partition)
        self._publisher.flush(producer, timeout_s)
        return ticket

    def fetch(self, ticket: AsyncTicket, timeout_s: float) -> InferReply | None:
        """The reply to an asynchronous request, or None while there is none yet.

        Works in any process (see `bus.reply.tickets.find_reply`); raises
        `UnknownTicketError` for a ticket that names no request sent here.
        """
        record = find_reply(self.driver, ticket, self.replies_topic, self.requests_topic, timeout_s)
        return None if record is None else parse_reply(record)

    def deliver(self, record: Record) -> None:
        """Hand one ``replies`` record to the request waiting for it, or drop it."""
        self._pending.deliver(record)

    def reachable(self) -> bool:
        """True when the reply thread reached Kafka within the last few probe intervals."""
        return self._reader.reachable()

    def ready(self) -> bool:
        """True when a request sent now gets its reply read: positioned and reachable."""
        return self._reader.partition is not None and self._reader.reachable()

    def owned_partitions(self) -> list[int]:
        """The ``replies`` partition this process reads (empty until it is positioned)."""
        partition = self._reader.partition
        return [] if partition is None else [partition]

    def stats(self) -> ReplyStats:
        """Current counters."""
        pending, replies, timeouts, late, rejected = self._pending.counts()
        return ReplyStats(
            pending=pending,
            sent=self._publisher.sent,
            replies=replies,
            timeouts=timeouts,
            late_replies=late,
            rejected=rejected,
            partitions=int(self._reader.partition is not None),
        )

    def _started(self) -> Producer:
        if self._pid != os.getpid():
            self.start()
        producer = self._publisher.producer
        if producer is None:
            raise BusError("the reply client is closed; start it again")
        return producer
