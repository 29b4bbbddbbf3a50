"""Request/reply over the bus: the headers both sides use, and the client side.

The scorer's side only needs `ReplyAddress.of_request` and
`ReplyAddress.reply_headers`. The gateway's side is `ReplyClient`, on the client
interface of `bus.clients.base` (any driver):

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
  to that partition reads it back from its end, in growing windows, until it
  finds the correlation id or reaches records older than the send time, so any
  worker of any process can answer the poll. Owners of the partition ignore
  async replies (they are not late).

A caller never sleeps or polls: it waits on an event the reply thread sets, and
no lock is held while a client talks to the broker. The reply thread rides
through transient bus faults (a broker restart) and makes a new consumer after
any other failure; a flusher thread collects the producer's delivery results, so
a failed delivery is logged (its caller gets no reply in time: a timeout).
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from bus.clients.base import (
    Consumer,
    Driver,
    Producer,
    Record,
    RecordTooLargeError,
    TopicPartition,
    TransientBusError,
)
from bus.messages import MAX_MESSAGE_BYTES, InferReply, InferRequest
from bus.partitions import wait_for_partitions
from core.errors import BusError, MessageError
from core.shutdown import StopFlag

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

#: How many of the newest records `ReplyClient.fetch` reads first; each further
#: window back is four times larger.
FETCH_WINDOW = 1000

#: How long the reply thread's poll waits for records.
POLL_S = 0.1

#: Backoff of the reply thread after a bus fault: first and longest wait.
BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0

#: How long the flusher waits for the requests sent to be acknowledged.
FLUSH_TIMEOUT_S = 30.0


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


class ReplyClient:
    """Publishes inference requests and waits for, or later finds, their replies.

    One per process: `start` makes the producer and starts the reply and flusher
    threads in the calling process (and again in a forked child, which never
    reuses its parent's clients); the reply thread makes its own consumer.
    ``clock_ms`` (wall clock, for send times) and ``new_id`` are parameters so
    tests can fix them; the driver makes the Kafka clients.
    """

    def __init__(
        self,
        driver: Driver,
        requests_topic: str,
        replies_topic: str,
        *,
        group_id: str,
        max_pending: int = 1000,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        probe_interval_s: float = 2.0,
    ) -> None:
        self.driver = driver
        self.requests_topic = requests_topic
        self.replies_topic = replies_topic
        self.group_id = group_id
        self.max_pending = max_pending
        self._clock_ms = clock_ms
        self._new_id = new_id
        self._probe_interval_s = probe_interval_s
        self._start_lock = threading.Lock()
        self._lock = threading.Lock()
        self._owned = threading.Condition(self._lock)
        self._pending: dict[str, _Waiter] = {}
        self._usable: list[int] = []  # owned partitions whose start offset is set
        self._next_offset: dict[int, int] = {}
        self._turn = 0
        self._sent = self._replies = self._timeouts = self._late = self._rejected = 0
        self._reachable_at = float("-inf")
        self._pid: int | None = None
        self._stop = StopFlag()
        self._unflushed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._producer: Producer | None = None
        # the reply thread's own: its consumer, and partitions assigned whose start is not set
        self._consumer: Consumer | None = None
        self._fresh: list[TopicPartition] = []

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> ReplyClient:
        """Make the producer, start the reply and flusher threads in this process (idempotent)."""
        if self._pid == os.getpid():
            return self
        with self._start_lock:
            if self._pid == os.getpid():
                return self
            producer = self.driver.producer(linger_ms=1)
            with self._lock:
                self._pending.clear()
                self._usable = []
                self._next_offset = {}
                self._reachable_at = float("-inf")
            self._fresh = []
            self._stop = StopFlag()
            self._unflushed = threading.Event()
            self._producer = producer
            self._threads = [
                threading.Thread(
                    target=self._run, name=f"replies-{self.replies_topic}", daemon=True
                ),
                threading.Thread(
                    target=self._flush_loop, name=f"requests-{self.requests_topic}", daemon=True
                ),
            ]
            for thread in self._threads:
                thread.start()
            self._pid = os.getpid()
        return self

    def close(self) -> None:
        """Stop the threads, leave the group and close the clients (this process only)."""
        if self._pid != os.getpid():
            return
        self._stop.set()
        self._unflushed.set()
        for thread in self._threads:
            thread.join(timeout=10)
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(3.0)
            except BusError as exc:  # closing is best effort
                log.debug("closing the requests producer: %s", exc)
        self._pid = None

    # --- what callers use --------------------------------------------------------------

    def call(self, request: InferRequest, timeout_s: float) -> InferReply:
        """Publish ``request`` and wait for its reply.

        Raises `ReplyTimeoutError` after ``timeout_s``, `TooManyPendingError` when this process
        waits for ``max_pending`` replies already, and `BusError` when Kafka cannot
        be reached or no ``replies`` partition is owned here within the timeout.
        """
        producer = self._started()
        deadline = time.monotonic() + timeout_s
        value = self._encode(request)
        if not self.reachable():
            raise BusError(
                f"Kafka cannot be reached (no answer to this gateway worker for "
                f"{3 * self._probe_interval_s:g} s, or topic {self.replies_topic!r} is "
                "missing); retry later"
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
            self._send(producer, address, value)
        except BusError:
            self._forget(correlation_id)
            raise
        with self._lock:
            self._sent += 1
        if not waiter.event.wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                timed_out = self._pending.pop(correlation_id, None) is not None
                if timed_out:
                    self._timeouts += 1
            if timed_out:
                raise ReplyTimeoutError(
                    f"no reply within {timeout_s:g} s: the scorer may be down or overloaded; "
                    "retry later"
                )
            waiter.event.wait()  # the reply came as the time ran out: it is being handed over
        if waiter.error is not None:
            raise waiter.error
        assert waiter.reply is not None
        return waiter.reply

    def submit(self, request: InferRequest, timeout_s: float) -> AsyncTicket:
        """Publish ``request`` for a later `fetch`; return once Kafka has it."""
        producer = self._started()
        value = self._encode(request)
        correlation_id = ASYNC_PREFIX + self._new_id()
        try:
            count = producer.partition_count(self.replies_topic)
        except BusError as exc:
            raise BusError(
                f"cannot read the partitions of {self.replies_topic!r}: {exc}; retry later"
            ) from exc
        if count < 1:
            raise BusError(f"topic {self.replies_topic!r} has no partitions; create it")
        partition = random.randrange(count)
        sent_ms = self._clock_ms()
        self._send(producer, ReplyAddress(correlation_id, self.replies_topic, partition), value)
        try:
            producer.flush(timeout_s)
        except BusError as exc:
            raise BusError(
                f"cannot publish to {self.requests_topic!r}: {exc}; retry later"
            ) from exc
        with self._lock:
            self._sent += 1
        return AsyncTicket(partition, sent_ms, correlation_id)

    def fetch(self, ticket: AsyncTicket, timeout_s: float) -> InferReply | None:
        """The reply to an asynchronous request, or None while there is none yet.

        Reads the ticket's partition back from its end with a consumer of its own
        (no group), so it works in any process. Raises `UnknownTicketError` for a
        partition the topic does not have.
        """
        deadline = time.monotonic() + timeout_s
        consumer = self.driver.consumer(group_id=None, max_poll_records=500, fetch_max_wait_ms=20)
        try:
            if ticket.partition not in consumer.partitions_for(self.replies_topic):
                raise UnknownTicketError(
                    f"{self.replies_topic!r} has no partition {ticket.partition}: "
                    "the token is not one of this gateway's"
                )
            tp = TopicPartition(self.replies_topic, ticket.partition)
            consumer.assign([tp])
            end = consumer.end_offsets([tp])[tp]
            return self._find(consumer, tp, end, ticket, deadline)
        except UnknownTicketError:
            raise
        except BusError as exc:
            raise BusError(f"cannot read {self.replies_topic!r}: {exc}; retry later") from exc
        finally:
            _close_quietly(consumer)

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

    def _started(self) -> Producer:
        if self._pid != os.getpid():
            self.start()
        producer = self._producer
        if producer is None:
            raise BusError("the reply client is closed; start it again")
        return producer

    def _encode(self, request: InferRequest) -> bytes:
        value = request.to_bytes()
        if len(value) > MAX_MESSAGE_BYTES:
            raise RequestTooLargeError(
                f"the request encodes to {len(value)} bytes; a request may hold "
                f"{MAX_MESSAGE_BYTES}: send fewer rows per request"
            )
        return value

    def _send(self, producer: Producer, address: ReplyAddress, value: bytes) -> None:
        """Queue one request (the flusher collects its delivery)."""
        try:
            producer.send(
                self.requests_topic,
                value,
                key=address.correlation_id.encode(),
                headers=address.request_headers(),
            )
        except RecordTooLargeError as exc:
            raise RequestTooLargeError(
                f"Kafka refuses a request of {len(value)} bytes ({exc}): send fewer rows "
                "per request"
            ) from exc
        except BusError as exc:
            raise BusError(
                f"cannot publish to {self.requests_topic!r}: {exc}; retry later"
            ) from exc
        self._unflushed.set()

    def _find(
        self, consumer: Consumer, tp: TopicPartition, end: int, ticket: AsyncTicket, deadline: float
    ) -> InferReply | None:
        """Read ``tp`` back from ``end`` in growing windows until the reply or the send time."""
        wanted = ticket.correlation_id.encode()
        oldest_ms = ticket.sent_ms - CLOCK_SKEW_MS
        high, window = end, FETCH_WINDOW
        while high > 0:
            low = max(0, high - window)
            consumer.seek(tp, low)
            before_send = False
            while consumer.position(tp) < high:
                if time.monotonic() >= deadline:
                    return None
                for record in consumer.poll(POLL_S):
                    if record.offset >= high:
                        continue
                    if header(record, CORRELATION_ID) == wanted:
                        return self._parse(record)
                    before_send = before_send or record.timestamp < oldest_ms
            if before_send:
                return None  # the window starts before the request was sent
            high, window = low, window * 4
        return None

    # --- the reply thread --------------------------------------------------------------

    def _run(self) -> None:
        """Poll ``replies`` and hand replies over; ride through faults until stopped."""
        stop = self._stop
        consumer: Consumer | None = None
        backoff = BACKOFF_S
        failing_since: float | None = None
        next_probe = 0.0
        try:
            while not stop.is_set():
                try:
                    if consumer is None:
                        consumer = self._join()
                        if consumer is None:
                            break
                    records = consumer.poll(POLL_S)
                    if self._fresh:
                        # started only now: what the poll read of them came from elsewhere
                        started = self._start_at_end(consumer)
                        records = [r for r in records if r.partition not in started]
                    for record in records:
                        self.deliver(record)
                    if time.monotonic() >= next_probe:
                        consumer.end_offsets([TopicPartition(self.replies_topic, 0)])
                        self._reachable_at = time.monotonic()
                        next_probe = self._reachable_at + self._probe_interval_s
                    if failing_since is not None:
                        log.info(
                            "reply consumer on %r: working again after %.1f s",
                            self.replies_topic,
                            time.monotonic() - failing_since,
                        )
                        failing_since, backoff = None, BACKOFF_S
                except TransientBusError as exc:
                    if failing_since is None:
                        failing_since = time.monotonic()
                        log.warning("reply consumer on %r: %s; retrying", self.replies_topic, exc)
                    else:
                        log.debug("reply consumer on %r: %s", self.replies_topic, exc)
                    next_probe = 0.0
                    stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                except Exception as exc:  # anything else: a new consumer, a new membership
                    if isinstance(exc, BusError):
                        log.warning(
                            "reply consumer on %r: %s; joining again with a new consumer",
                            self.replies_topic,
                            exc,
                        )
                    else:
                        log.exception(
                            "reply consumer on %r failed; joining again", self.replies_topic
                        )
                    failing_since = failing_since or time.monotonic()
                    self._lose_partitions()
                    if consumer is not None:
                        _close_quietly(consumer)
                    consumer = self._consumer = None
                    next_probe = 0.0
                    stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            self._lose_partitions()
            self._consumer = None
            if consumer is not None:
                _close_quietly(consumer)

    def _join(self) -> Consumer | None:
        """A member of the group of ``replies`` (None: stopped while waiting for the topic)."""
        consumer = self._consumer = self.driver.consumer(
            group_id=self.group_id, auto_offset_reset="latest", max_poll_records=1000
        )
        try:
            if wait_for_partitions(consumer, self.replies_topic, None, stop=self._stop):
                consumer.subscribe(
                    [self.replies_topic], on_assign=self._on_assign, on_revoke=self._on_revoke
                )
                return consumer
        except BaseException:
            self._consumer = None
            _close_quietly(consumer)
            raise
        self._consumer = None
        _close_quietly(consumer)
        return None

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        """Newly owned partitions; runs inside the poll, so it does no I/O.

        A partition starts where this process stopped reading it if requests still
        wait for replies there (a seek, offered at once); the others start at
        their end, set once the poll returns (`_start_at_end`).
        """
        with self._lock:
            waited_on = {w.partition for w in self._pending.values()}
            resume = {
                tp: self._next_offset[tp.partition]
                for tp in partitions
                if tp.partition in waited_on and tp.partition in self._next_offset
            }
        consumer = self._consumer
        if consumer is not None and resume:
            for tp, offset in resume.items():
                consumer.seek(tp, offset)
            self._offer(resume)
        self._fresh += [tp for tp in partitions if tp not in resume]

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in partitions}
        self._fresh = [tp for tp in self._fresh if tp.partition not in revoked]
        with self._lock:
            self._usable = [p for p in self._usable if p not in revoked]

    def _lose_partitions(self) -> None:
        self._fresh = []
        with self._lock:
            self._usable = []

    def _start_at_end(self, consumer: Consumer) -> set[int]:
        """Start the partitions assigned in the last poll at their end; return them.

        The end is taken now: the reply to a request sent once the partition is
        offered comes after it.
        """
        fresh, self._fresh = self._fresh, []
        try:
            ends = consumer.end_offsets(fresh)
            for tp, offset in ends.items():
                consumer.seek(tp, offset)
        except BaseException:
            self._fresh = fresh + self._fresh
            raise
        self._offer(ends)
        return {tp.partition for tp in fresh}

    def _offer(self, starts: Mapping[TopicPartition, int]) -> None:
        """Partitions whose start is set: callers may now send requests' replies there."""
        with self._owned:
            for tp, offset in starts.items():
                self._next_offset[tp.partition] = offset
            self._usable = sorted({*self._usable, *(tp.partition for tp in starts)})
            usable = list(self._usable)
            self._owned.notify_all()
        log.info("reply partitions of %r owned here: %s", self.replies_topic, usable)

    def deliver(self, record: Record) -> None:
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

    def _parse(self, record: Record) -> InferReply:
        try:
            return InferReply.from_bytes(record.value or b"")
        except MessageError as exc:
            raise BusError(
                f"the scorer sent a malformed reply ({record.topic}[{record.partition}]"
                f"@{record.offset}): {exc}"
            ) from exc

    def _forget(self, correlation_id: str) -> None:
        with self._lock:
            self._pending.pop(correlation_id, None)

    # --- the flusher -------------------------------------------------------------------

    def _flush_loop(self) -> None:
        """Wait for the requests sent to be acknowledged; log the deliveries that failed."""
        stop, unflushed, producer = self._stop, self._unflushed, self._producer
        assert producer is not None
        while True:
            unflushed.wait()
            if stop.is_set():
                return
            unflushed.clear()
            try:
                producer.flush(FLUSH_TIMEOUT_S)
            except BusError as exc:
                log.warning(
                    "requests to %r were not delivered (their callers get no reply): %s",
                    self.requests_topic,
                    exc,
                )
                stop.wait(BACKOFF_S)


def _close_quietly(consumer: Consumer) -> None:
    try:
        consumer.close()
    except BusError as exc:
        log.debug("closing a consumer: %s", exc)
