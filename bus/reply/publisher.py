"""The requests side of the gateway's reply client: encode, send, collect deliveries.

A `RequestPublisher` owns the producer of one process and a flusher thread that
collects the producer's delivery results every ``flush_every_s`` at most (a
flush per request would wake it, and force a produce request, for every one),
so a failed delivery is logged; its caller gets no reply in time: a timeout.
"""

from __future__ import annotations

import logging
import threading

from bus.clients.base import Driver, Producer, RecordTooLargeError
from bus.messages import MAX_MESSAGE_BYTES, InferRequest
from bus.reply.address import ReplyAddress
from bus.reply.errors import RequestTooLargeError
from core.errors import BusError
from core.shutdown import StopFlag

log = logging.getLogger(__name__)

#: How long the flusher waits for the requests sent to be acknowledged.
FLUSH_TIMEOUT_S = 30.0

#: How often at most the flusher collects the deliveries (requests leave after ``linger_ms``).
FLUSH_EVERY_S = 0.05

#: How long the flusher waits after a failed flush before the next one.
FLUSH_BACKOFF_S = 0.1


def encode_request(request: InferRequest) -> bytes:
    """The ``requests`` value of ``request``; `RequestTooLargeError` beyond a message's limit."""
    value = request.to_bytes()
    if len(value) > MAX_MESSAGE_BYTES:
        raise RequestTooLargeError(
            f"the request encodes to {len(value)} bytes; a request may hold "
            f"{MAX_MESSAGE_BYTES}: send fewer rows per request"
        )
    return value


class RequestPublisher:
    """Sends requests to ``requests_topic`` through one producer per `start`."""

    def __init__(
        self,
        driver: Driver,
        requests_topic: str,
        *,
        linger_ms: int = 1,
        flush_every_s: float = FLUSH_EVERY_S,
    ) -> None:
        self.driver = driver
        self.requests_topic = requests_topic
        self.linger_ms = linger_ms
        self.flush_every_s = flush_every_s
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = StopFlag()
        self._unflushed = threading.Event()
        self._thread: threading.Thread | None = None
        self.producer: Producer | None = None

    def start(self, stop: StopFlag) -> None:
        """Make a producer and start the flusher, which ends when ``stop`` is set."""
        producer = self.driver.producer(linger_ms=self.linger_ms)
        self._stop = stop
        self._unflushed = threading.Event()
        self.producer = producer
        self._thread = threading.Thread(
            target=self._flush_loop,
            args=(producer,),
            name=f"requests-{self.requests_topic}",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop the flusher (the stop flag given to `start` must be set) and close the producer."""
        self._unflushed.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        producer, self.producer = self.producer, None
        if producer is not None:
            try:
                producer.close(3.0)
            except BusError as exc:  # closing is best effort
                log.debug("closing the requests producer: %s", exc)

    def partition_count(self, producer: Producer, topic: str) -> int:
        """The number of partitions of ``topic``; a `BusError` that says what to do if none."""
        try:
            count = producer.partition_count(topic)
        except BusError as exc:
            raise BusError(f"cannot read the partitions of {topic!r}: {exc}; retry later") from exc
        if count < 1:
            raise BusError(f"topic {topic!r} has no partitions; create it")
        return count

    def send(
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
            self.sent += 1
        self._unflushed.set()

    def flush(self, producer: Producer, timeout_s: float) -> None:
        """Wait until Kafka has every request sent; a `BusError` that says what to do if not."""
        try:
            producer.flush(timeout_s)
        except BusError as exc:
            raise BusError(
                f"cannot publish to {self.requests_topic!r}: {exc}; retry later"
            ) from exc

    def _flush_loop(self, producer: Producer) -> None:
        """Wait for the requests sent to be acknowledged; log the deliveries that failed."""
        stop, unflushed = self._stop, self._unflushed
        while True:
            unflushed.wait()
            if stop.wait(self.flush_every_s):
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
                stop.wait(FLUSH_BACKOFF_S)
