"""Request/reply over the bus: the headers both sides use, and the client side.

The scorer's side only needs `ReplyAddress.of_request` and
`ReplyAddress.reply_headers`. The gateway's side is `ReplyClient`:

* a **synchronous call** publishes an `InferRequest` to ``requests`` with a fresh
  correlation id and, as its reply address, one of the ``replies`` partitions that
  this process's reply consumer currently owns. That consumer is a member of one
  consumer group shared by every gateway worker of every gateway process, so
  Kafka's group coordinator gives each ``replies`` partition to exactly one of
  them: the reply comes back to the process that waits for it. A reply whose
  correlation id is not waited for here (it came after its timeout, or a
  rebalance moved the partition) is dropped and counted, never handed to
  another request.
* an **asynchronous call** publishes the same way with a correlation id marked
  ``async-`` and returns an `AsyncTicket` (partition, send time, id). Anyone can
  later find the reply with `ReplyClient.fetch`: a short-lived consumer assigned
  to that partition starts at ``offsets_for_times(send time)`` and looks for the
  correlation id, so any worker of any process can answer the poll. Owners of
  the partition ignore async replies (they are not late).
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from bus.clients import make_consumer, make_producer
from bus.clients.base import Record
from bus.messages import MAX_MESSAGE_BYTES, InferReply, InferRequest
from bus.settings import KafkaSettings
from streamscore.errors import BusError, MessageError

log = logging.getLogger(__name__)

CORRELATION_ID = "correlation-id"
REPLY_TOPIC = "reply-topic"
REPLY_PARTITION = "reply-partition"

#: Correlation ids of asynchronous requests start with this; the reply consumer of
#: the partition they land on leaves them for `ReplyClient.fetch`.
ASYNC_PREFIX = "async-"

#: How far before the send time an asynchronous lookup starts reading, so that a
#: scorer whose clock is behind the gateway's is still found.
CLOCK_SKEW_MS = 10_000


def header(record: ConsumerRecord | Record, name: str) -> bytes | None:
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
    def of_request(cls, record: ConsumerRecord | Record) -> ReplyAddress:
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


# --- the client side ---------------------------------------------------------------


class ReplyTimeoutError(BusError):
    """No reply came within the timeout (the scorer is down, slow or overloaded)."""


class TooManyPendingError(BusError):
    """This process already waits for as many replies as it may."""


class RequestTooLargeError(BusError):
    """A request that encodes to more than a ``requests`` message may hold."""


class UnknownTicketError(BusError):
    """An asynchronous ticket that does not name a request of this bus."""


_TOKEN = re.compile(r"^(\d{1,6})\.(\d{1,15})\.([0-9A-Za-z_-]{1,64})$")


@dataclass(frozen=True, slots=True)
class AsyncTicket:
    """Where and when an asynchronous request was sent: enough to find its reply later."""

    partition: int
    sent_ms: int
    correlation_id: str

    def token(self) -> str:
        """A URL-safe text form: ``<partition>.<send time ms>.<id hex>``."""
        return f"{self.partition}.{self.sent_ms}.{self.correlation_id[len(ASYNC_PREFIX) :]}"

    @classmethod
    def parse(cls, token: str) -> AsyncTicket:
        """Read a `token`; raise UnknownTicketError if it is not one."""
        match = _TOKEN.match(token)
        if match is None:
            raise UnknownTicketError(f"{token[:80]!r} is not a request token of this gateway")
        return cls(int(match[1]), int(match[2]), ASYNC_PREFIX + match[3])


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


class _Waiter:
    """One synchronous request waiting for its reply."""

    __slots__ = ("error", "event", "partition", "reply")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.event = threading.Event()
        self.reply: InferReply | None = None
        self.error: BusError | None = None


class _Ownership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Follows which ``replies`` partitions the group gave to this process's consumer.

    Kafka calls it on the consumer's I/O loop: it only records and seeks (no I/O);
    the reply loop then resolves the positions before the partitions are used.
    """

    def __init__(self, client: ReplyClient) -> None:
        self._client = client

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._client._revoked({tp.partition for tp in revoked})

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._client._assigned(list(assigned))


Factory = Callable[..., Any]


class ReplyClient:
    """Publishes inference requests and waits for, or later finds, their replies.

    One per process: `start` makes the Kafka clients and the reply thread in the
    calling process (and again in a forked child, which never reuses its parent's
    clients). ``clock_ms`` (wall clock, for send times) and ``new_id`` are
    parameters so tests can fix them; the factories make the Kafka clients.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        requests_topic: str,
        replies_topic: str,
        *,
        group_id: str,
        max_pending: int = 1000,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        producer_factory: Factory = make_producer,
        consumer_factory: Factory = make_consumer,
        probe_interval_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.requests_topic = requests_topic
        self.replies_topic = replies_topic
        self.group_id = group_id
        self.max_pending = max_pending
        self._clock_ms = clock_ms
        self._new_id = new_id
        self._producer_factory = producer_factory
        self._consumer_factory = consumer_factory
        self._probe_interval_s = probe_interval_s
        self._lock = threading.Lock()
        self._owned = threading.Condition(self._lock)
        self._pending: dict[str, _Waiter] = {}
        self._usable: list[int] = []  # owned partitions whose position is resolved
        self._settling: set[int] = set()  # owned, position not resolved yet
        self._next_offset: dict[int, int] = {}
        self._turn = 0
        self._sent = self._replies = self._timeouts = self._late = self._rejected = 0
        self._reachable_at = float("-inf")
        self._pid: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: Any = None
        self._consumer: Any = None

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> ReplyClient:
        """Make the Kafka clients and start the reply thread in this process (idempotent)."""
        with self._lock:
            if self._pid == os.getpid():
                return self
            self._pid = os.getpid()
            self._pending.clear()
            self._usable, self._settling = [], set()
            self._stop = threading.Event()
        self._producer = self._producer_factory(self.settings, linger_ms=1, max_block_ms=5000)
        self._consumer = self._consumer_factory(
            self.settings,
            group_id=self.group_id,
            auto_offset_reset="latest",
            max_poll_records=1000,
        )
        self._consumer.subscribe([self.replies_topic], listener=_Ownership(self))
        self._thread = threading.Thread(
            target=self._run, name=f"replies-{self.replies_topic}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the reply thread, leave the group and close the clients (this process only)."""
        if self._pid != os.getpid():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            if self._consumer is not None:
                self._consumer.close(autocommit=False, timeout_ms=3000)
            if self._producer is not None:
                self._producer.close(timeout=3)
        except Exception:  # closing is best effort
            log.debug("error while closing the Kafka clients", exc_info=True)
        self._pid = None

    # --- what callers use --------------------------------------------------------------

    def call(self, request: InferRequest, timeout_s: float) -> InferReply:
        """Publish ``request`` and wait for its reply.

        Raises `ReplyTimeoutError` after ``timeout_s``, `TooManyPendingError` when this process
        waits for ``max_pending`` replies already, and `BusError` when Kafka cannot
        be reached or no ``replies`` partition is owned here within the timeout.
        """
        self.start()
        deadline = time.monotonic() + timeout_s
        value = self._encode(request)
        if not self.reachable():
            raise BusError(
                f"Kafka at {self.settings.bootstrap_servers} cannot be reached; retry later"
            )
        correlation_id = self._new_id()
        with self._owned:
            if len(self._pending) >= self.max_pending:
                self._rejected += 1
                raise TooManyPendingError(
                    f"this gateway worker already waits for {self.max_pending} replies; "
                    "retry later or add gateway workers"
                )
            while not self._usable:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BusError(
                        f"this gateway worker owns no partition of {self.replies_topic!r} "
                        "(the consumer group is rebalancing, or there are more gateway "
                        "workers than reply partitions); retry later"
                    )
                self._owned.wait(left)
            self._turn = (self._turn + 1) % len(self._usable)
            partition = self._usable[self._turn]
            waiter = self._pending[correlation_id] = _Waiter(partition)
        address = ReplyAddress(correlation_id, self.replies_topic, partition)
        try:
            future = self._producer.send(
                self.requests_topic,
                key=correlation_id.encode(),
                value=value,
                headers=address.request_headers(),
            )
            future.add_errback(self._send_failed, correlation_id)
        except KafkaError as exc:
            self._forget(correlation_id)
            raise BusError(f"cannot publish to {self.requests_topic!r}: {exc}") from exc
        with self._lock:
            self._sent += 1
        if not waiter.event.wait(max(0.0, deadline - time.monotonic())):
            self._forget(correlation_id)
            with self._lock:
                self._timeouts += 1
            raise ReplyTimeoutError(
                f"no reply within {timeout_s:g} s: the scorer may be down or overloaded; "
                "retry later"
            )
        if waiter.error is not None:
            raise waiter.error
        assert waiter.reply is not None
        return waiter.reply

    def submit(self, request: InferRequest, timeout_s: float) -> AsyncTicket:
        """Publish ``request`` for a later `fetch`; return once Kafka has it."""
        self.start()
        value = self._encode(request)
        correlation_id = ASYNC_PREFIX + self._new_id()
        try:
            partitions = sorted(self._producer.partitions_for(self.replies_topic) or ())
            if not partitions:
                raise BusError(f"topic {self.replies_topic!r} has no partitions")
            partition = random.choice(partitions)
            sent_ms = self._clock_ms()
            address = ReplyAddress(correlation_id, self.replies_topic, partition)
            self._producer.send(
                self.requests_topic,
                key=correlation_id.encode(),
                value=value,
                headers=address.request_headers(),
            ).get(timeout=timeout_s)
        except KafkaError as exc:
            raise BusError(f"cannot publish to {self.requests_topic!r}: {exc}") from exc
        with self._lock:
            self._sent += 1
        return AsyncTicket(partition, sent_ms, correlation_id)

    def fetch(self, ticket: AsyncTicket, timeout_s: float) -> InferReply | None:
        """The reply to an asynchronous request, or None while there is none yet.

        Reads the ticket's partition from the ticket's send time with a consumer of
        its own (no group), so it works in any process. Raises `UnknownTicketError` for
        a partition the topic does not have.
        """
        deadline = time.monotonic() + timeout_s
        consumer = self._consumer_factory(
            self.settings, group_id=None, max_poll_records=500, fetch_max_wait_ms=20
        )
        try:
            partitions = consumer.partitions_for_topic(self.replies_topic) or set()
            if ticket.partition not in partitions:
                raise UnknownTicketError(
                    f"{self.replies_topic!r} has no partition {ticket.partition}: "
                    "the token is not one of this gateway's"
                )
            tp = TopicPartition(self.replies_topic, ticket.partition)
            consumer.assign([tp])
            ms = int(timeout_s * 1000)
            start = consumer.offsets_for_times(
                {tp: max(0, ticket.sent_ms - CLOCK_SKEW_MS)}, timeout_ms=ms
            ).get(tp)
            if start is None:
                return None
            end = consumer.end_offsets([tp], timeout_ms=ms)[tp]
            consumer.seek(tp, start.offset)
            wanted = ticket.correlation_id.encode()
            while time.monotonic() < deadline and consumer.position(tp) < end:
                for record in consumer.poll(timeout_ms=100).get(tp, ()):
                    if record.offset >= end:
                        return None
                    if header(record, CORRELATION_ID) == wanted:
                        return self._parse(record)
            return None
        except KafkaError as exc:
            raise BusError(f"cannot read {self.replies_topic!r}: {exc}") from exc
        finally:
            consumer.close(autocommit=False, timeout_ms=1000)

    def reachable(self) -> bool:
        """True when the reply thread reached Kafka within the last few probe intervals."""
        return time.monotonic() - self._reachable_at < 3 * self._probe_interval_s

    def owned_partitions(self) -> list[int]:
        """The ``replies`` partitions this process owns and can use now."""
        with self._lock:
            return sorted(self._usable)

    def stats(self) -> ReplyStats:
        """Current counters."""
        with self._lock:
            return ReplyStats(
                pending=len(self._pending),
                sent=self._sent,
                replies=self._replies,
                timeouts=self._timeouts,
                late_replies=self._late,
                rejected=self._rejected,
                partitions=len(self._usable),
            )

    def _encode(self, request: InferRequest) -> bytes:
        value = request.to_bytes()
        if len(value) > MAX_MESSAGE_BYTES:
            raise RequestTooLargeError(
                f"the request encodes to {len(value)} bytes; a request may hold "
                f"{MAX_MESSAGE_BYTES}: send fewer rows per request"
            )
        return value

    # --- the reply thread --------------------------------------------------------------

    def _run(self) -> None:
        consumer = self._consumer
        next_probe = 0.0
        while not self._stop.is_set():
            try:
                batch = consumer.poll(timeout_ms=100)
                self._settle(consumer)
                for records in batch.values():
                    for record in records:
                        self.deliver(record)
                if time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + self._probe_interval_s
                    probe = TopicPartition(self.replies_topic, 0)
                    consumer.end_offsets([probe], timeout_ms=int(self._probe_interval_s * 1000))
                    self._reachable_at = time.monotonic()
            except Exception as exc:
                log.warning("reply consumer on %r: %s", self.replies_topic, exc)
                self._stop.wait(0.5)

    def _settle(self, consumer: Any) -> None:
        """Resolve the positions of newly owned partitions, then offer them to callers."""
        with self._lock:
            settling = sorted(self._settling)
        if not settling:
            return
        for partition in settling:
            offset = consumer.position(TopicPartition(self.replies_topic, partition))
            if offset is None:
                return  # not resolved yet; try after the next poll
            self._next_offset[partition] = offset
        with self._owned:
            ready = [p for p in settling if p in self._settling]
            self._settling.difference_update(ready)
            self._usable = sorted({*self._usable, *ready})
            self._owned.notify_all()
        log.info("reply partitions of %r owned here: %s", self.replies_topic, self._usable)

    def _revoked(self, partitions: set[int]) -> None:
        with self._lock:
            self._usable = [p for p in self._usable if p not in partitions]
            self._settling -= partitions

    def _assigned(self, assigned: list[TopicPartition]) -> None:
        """Start where this process stopped if requests still wait there, else at the end."""
        with self._lock:
            waited_on = {w.partition for w in self._pending.values()}
            for tp in assigned:
                if tp.partition in waited_on and tp.partition in self._next_offset:
                    self._consumer.seek(tp, self._next_offset[tp.partition])
                else:
                    self._consumer.seek_to_end(tp)
                self._settling.add(tp.partition)

    def deliver(self, record: ConsumerRecord) -> None:
        """Hand one ``replies`` record to the request waiting for it, or drop it."""
        raw = header(record, CORRELATION_ID)
        correlation_id = raw.decode("ascii", "replace") if raw else ""
        with self._lock:
            self._next_offset[record.partition] = record.offset + 1
            if correlation_id.startswith(ASYNC_PREFIX):
                return  # read by `fetch`, from any process
            waiter = self._pending.pop(correlation_id, None)
            if waiter is None:
                self._late += 1
            else:
                self._replies += 1
        if waiter is None:
            log.debug("dropped a reply nobody here waits for: %r", correlation_id)
            return
        try:
            waiter.reply = self._parse(record)
        except BusError as exc:
            waiter.error = exc
        waiter.event.set()

    def _parse(self, record: ConsumerRecord) -> InferReply:
        try:
            return InferReply.from_bytes(record.value)
        except MessageError as exc:
            raise BusError(
                f"the scorer sent a malformed reply ({record.topic}[{record.partition}]"
                f"@{record.offset}): {exc}"
            ) from exc

    def _send_failed(self, correlation_id: str, exc: Exception) -> None:
        with self._lock:
            waiter = self._pending.pop(correlation_id, None)
        if waiter is not None:
            waiter.error = BusError(f"cannot publish to {self.requests_topic!r}: {exc}")
            waiter.event.set()

    def _forget(self, correlation_id: str) -> None:
        with self._lock:
            self._pending.pop(correlation_id, None)
