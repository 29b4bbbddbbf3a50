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
from bus.reply.address import CORRELATION_ID, ReplyAddress, header
from bus.reply.tickets import ASYNC_PREFIX, AsyncTicket, close_quietly, find_reply
from core.errors import BusError, MessageError
from core.shutdown import StopFlag

log = logging.getLogger(__name__)

#: How long the reply thread's poll waits for records (a long poll, not a sleep).
POLL_S = 0.1

#: Backoff of the reply thread after a bus fault: first and longest wait.
BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0

#: How long the flusher waits for the requests sent to be acknowledged.
FLUSH_TIMEOUT_S = 30.0

#: How often at most the flusher collects the deliveries (requests leave after ``linger_ms``).
FLUSH_EVERY_S = 0.05


class ReplyTimeoutError(BusError):
    """No reply came within the timeout (the scorer is down, slow or overloaded)."""


class TooManyPendingError(BusError):
    """This process already waits for as many replies as it may."""


class RequestTooLargeError(BusError):
    """A request that encodes to more than a ``requests`` message may hold."""


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

    __slots__ = ("error", "event", "reply")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: InferReply | None = None
        self.error: BusError | None = None


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
        self._linger_ms = linger_ms
        self._flush_every_s = flush_every_s
        self._start_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pending: dict[str, _Waiter] = {}
        self._partition: int | None = None  # set once the consumer is positioned
        self._positioned = threading.Event()
        self._next_offset: int | None = None
        self._sent = self._replies = self._timeouts = self._late = self._rejected = 0
        self._reachable_at = float("-inf")
        self._pid: int | None = None
        self._stop = StopFlag()
        self._unflushed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._producer: Producer | None = None

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> ReplyClient:
        """Make the producer, start the reply and flusher threads in this process (idempotent)."""
        if self._pid == os.getpid():
            return self
        with self._start_lock:
            if self._pid == os.getpid():
                return self
            producer = self.driver.producer(linger_ms=self._linger_ms)
            with self._lock:
                self._pending.clear()
                self._partition = self._next_offset = None
                self._reachable_at = float("-inf")
            self._positioned = threading.Event()
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

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until requests can be answered (the reply partition is read); True if so."""
        self._started()
        deadline = time.monotonic() + timeout_s
        if not self._positioned.wait(timeout_s):
            return False
        while not self.reachable() and time.monotonic() < deadline:
            self._stop.wait(0.01)
        return self.ready()

    def close(self) -> None:
        """Stop the threads and close the clients (this process only)."""
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
        value = self._encode(request)
        partition = self._partition
        if partition is None or not self.reachable():
            raise BusError(
                f"this gateway worker does not read {self.replies_topic!r} yet, or Kafka "
                f"did not answer it for {3 * self._probe_interval_s:g} s; retry later"
            )
        correlation_id = self._new_id()
        waiter = _Waiter()
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self._rejected += 1
                raise TooManyPendingError(
                    f"this gateway worker already waits for {self.max_pending} replies; "
                    "retry later or add gateway workers"
                )
            self._pending[correlation_id] = waiter
        address = ReplyAddress(correlation_id, self.replies_topic, partition, request_id)
        try:
            self._send(producer, address, value, None)
        except BusError:
            self._forget(correlation_id)
            raise
        if not waiter.event.wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                timed_out = self._pending.pop(correlation_id, None) is not None
                self._timeouts += timed_out
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

    def submit(
        self, request: InferRequest, timeout_s: float, *, request_id: str | None = None
    ) -> AsyncTicket:
        """Publish ``request`` for a later `fetch`; return once Kafka has it."""
        producer = self._started()
        value = self._encode(request)
        correlation_id = ASYNC_PREFIX + self._new_id()
        replies = self._partition_count(producer, self.replies_topic)
        requests = self._partition_count(producer, self.requests_topic)
        ticket = AsyncTicket(
            random.randrange(replies), random.randrange(requests), self._clock_ms(), correlation_id
        )
        address = ReplyAddress(correlation_id, self.replies_topic, ticket.partition, request_id)
        self._send(producer, address, value, ticket.request_partition)
        try:
            producer.flush(timeout_s)
        except BusError as exc:
            raise BusError(
                f"cannot publish to {self.requests_topic!r}: {exc}; retry later"
            ) from exc
        return ticket

    def fetch(self, ticket: AsyncTicket, timeout_s: float) -> InferReply | None:
        """The reply to an asynchronous request, or None while there is none yet.

        Works in any process (see `bus.reply.tickets.find_reply`); raises
        `UnknownTicketError` for a ticket that names no request sent here.
        """
        record = find_reply(self.driver, ticket, self.replies_topic, self.requests_topic, timeout_s)
        return None if record is None else self._parse(record)

    def reachable(self) -> bool:
        """True when the reply thread reached Kafka within the last few probe intervals."""
        return time.monotonic() - self._reachable_at < 3 * self._probe_interval_s

    def ready(self) -> bool:
        """True when a request sent now gets its reply read: positioned and reachable."""
        return self._partition is not None and self.reachable()

    def owned_partitions(self) -> list[int]:
        """The ``replies`` partition this process reads (empty until it is positioned)."""
        partition = self._partition
        return [] if partition is None else [partition]

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
                partitions=int(self._partition is not None),
            )

    def _started(self) -> Producer:
        if self._pid != os.getpid():
            self.start()
        producer = self._producer
        if producer is None:
            raise BusError("the reply client is closed; start it again")
        return producer

    def _partition_count(self, producer: Producer, topic: str) -> int:
        try:
            count = producer.partition_count(topic)
        except BusError as exc:
            raise BusError(f"cannot read the partitions of {topic!r}: {exc}; retry later") from exc
        if count < 1:
            raise BusError(f"topic {topic!r} has no partitions; create it")
        return count

    def _encode(self, request: InferRequest) -> bytes:
        value = request.to_bytes()
        if len(value) > MAX_MESSAGE_BYTES:
            raise RequestTooLargeError(
                f"the request encodes to {len(value)} bytes; a request may hold "
                f"{MAX_MESSAGE_BYTES}: send fewer rows per request"
            )
        return value

    def _send(
        self, producer: Producer, address: ReplyAddress, value: bytes, partition: int | None
    ) -> None:
        """Queue one request (the flusher collects its delivery)."""
        try:
            producer.send(
                self.requests_topic,
                value,
                key=address.correlation_id.encode(),
                partition=partition,
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
        with self._lock:
            self._sent += 1
        self._unflushed.set()

    # --- the reply thread --------------------------------------------------------------

    def _run(self) -> None:
        """Read the reply partition and hand replies over; ride through faults until stopped."""
        stop = self._stop
        consumer: Consumer | None = None
        backoff = BACKOFF_S
        failing_since: float | None = None
        next_probe = 0.0
        try:
            while not stop.is_set():
                try:
                    if consumer is None:
                        consumer = self._open()
                        if consumer is None:
                            break
                    records = consumer.poll(POLL_S)
                    for record in records:
                        self.deliver(record)
                    if records:  # records came: Kafka answers
                        self._reachable_at = time.monotonic()
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
                except Exception as exc:  # anything else: a new consumer
                    if isinstance(exc, BusError):
                        log.warning(
                            "reply consumer on %r: %s; opening a new consumer",
                            self.replies_topic,
                            exc,
                        )
                    else:
                        log.exception(
                            "reply consumer on %r failed; opening again", self.replies_topic
                        )
                    failing_since = failing_since or time.monotonic()
                    if consumer is not None:
                        close_quietly(consumer)
                    consumer = None
                    next_probe = 0.0
                    stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            if consumer is not None:
                close_quietly(consumer)

    def _open(self) -> Consumer | None:
        """A consumer assigned to this process's reply partition, positioned (None: stopped).

        The first time it starts at the partition's end (taken before any request
        names the partition, so every reply comes after it); a new consumer after a
        failure resumes where the last one stopped reading.
        """
        consumer = self.driver.consumer(group_id=None, max_poll_records=1000, fetch_max_wait_ms=100)
        try:
            if not wait_for_partitions(consumer, self.replies_topic, None, stop=self._stop):
                close_quietly(consumer)
                return None
            count = len(consumer.partitions_for(self.replies_topic))
            slot = os.getpid() if self.slot is None else self.slot
            partition = self._partition if self._partition is not None else slot % count
            tp = TopicPartition(self.replies_topic, partition)
            consumer.assign([tp])
            start = self._next_offset
            if start is None:
                start = consumer.end_offsets([tp])[tp]
            consumer.seek(tp, start)
        except BaseException:
            close_quietly(consumer)
            raise
        with self._lock:
            self._next_offset = start
        self._reachable_at = time.monotonic()
        if self._partition is None:
            self._partition = partition
            log.info("reading replies on %s[%d]", self.replies_topic, partition)
        self._positioned.set()
        return consumer

    def deliver(self, record: Record) -> None:
        """Hand one ``replies`` record to the request waiting for it, or drop it."""
        raw = header(record, CORRELATION_ID)
        correlation_id = raw.decode("ascii", "replace") if raw else ""
        with self._lock:
            self._next_offset = record.offset + 1
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
            if stop.wait(self._flush_every_s):
                return
            unflushed.clear()
            if stop.is_set():  # `close` sets stop, then unflushed: a clear after it sees stop
                return
            try:
                producer.flush(FLUSH_TIMEOUT_S)
            except BusError as exc:
                log.warning(
                    "requests to %r were not delivered (their callers get no reply): %s",
                    self.requests_topic,
                    exc,
                )
                stop.wait(BACKOFF_S)
