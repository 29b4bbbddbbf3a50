"""The send loop: publish points to the ``points`` topic, fast, paced and stoppable.

``publish(points, producer, topic, ...)`` takes any iterable of ``bus.messages.Point``
and a `bus.clients.base.Producer` of any driver (``driver_for(settings).producer()``).
It encodes each point once with a fast path, hands it to the producer without
waiting (batched by the producer, no per-point flush), optionally paces the stream
with a token bucket, and stamps ``ts`` with the send time (the record's own
timestamp is the client's, taken as it queues the record: the same moment, to a
millisecond or so). It chooses every partition itself, as Kafka's Java client
does (``murmur2`` of the key; unkeyed points one partition per chunk), so a key
lands on the same partition whichever client library sends it. The producer is
flushed every `FLUSH_EVERY` points or `FLUSH_INTERVAL_S` seconds, which
bounds what waits for the broker and surfaces failed deliveries, and at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from bus.clients.base import Producer
from bus.messages import Point
from core import runtime
from core.errors import BusError
from producer.encoding import encode_point
from producer.pacing import BURST_SECONDS, Clock, Pacer, StopLike, granted
from producer.partitioning import (
    PARTITIONS_REFRESH_S,
    KeyFn,
    Partitions,
    entity_keys,
    key_partition,
    murmur2,
    point_key,
)

__all__ = [
    "BURST_SECONDS",
    "CHUNK",
    "FLUSH_EVERY",
    "FLUSH_INTERVAL_S",
    "FLUSH_TIMEOUT_S",
    "GC_THRESHOLD",
    "PARTITIONS_REFRESH_S",
    "Clock",
    "KeyFn",
    "Pacer",
    "Progress",
    "PublishSummary",
    "StopLike",
    "encode_point",
    "entity_keys",
    "key_partition",
    "murmur2",
    "point_key",
    "publish",
    "wall_ms",
]

log = logging.getLogger(__name__)

#: Points sent between two looks at the stop flag and the clock; unkeyed points of
#: one chunk go to one partition (like Kafka's sticky partitioner).
CHUNK = 1000
#: The producer is flushed (everything sent acknowledged, failures raised) after
#: this many points, or this many seconds, whichever comes first: at most that much
#: waits for the broker (kafka-python 3 has no buffer limit of its own).
FLUSH_EVERY = 100 * CHUNK
FLUSH_INTERVAL_S = 1.0
#: How long the last flush waits when ``flush_timeout`` is not given.
FLUSH_TIMEOUT_S = 60.0
#: While publishing, the youngest GC generation is collected after this many
#: allocations instead of 700: each send allocates several short-lived objects, and
#: frequent collections cost the loop about a fifth of its time.
GC_THRESHOLD = 50_000


def wall_ms() -> int:
    """The current time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class PublishSummary:
    """What a run of ``publish`` did.

    ``sent`` and ``labelled`` count the points the broker acknowledged; ``failed``
    the points sent after the last acknowledged flush when a delivery failed
    (some of them may have been written: the producer says only that one was not).
    """

    sent: int
    labelled: int
    failed: int
    elapsed: float
    stopped: bool
    exhausted: bool
    error: str | None = None

    @property
    def rate(self) -> float:
        """Points delivered per second."""
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def unlabelled(self) -> int:
        """Points sent without a label."""
        return self.sent - self.labelled


Progress = Callable[[int, float], None]


def publish(
    points: Iterable[Point],
    producer: Producer,
    topic: str,
    *,
    count: int | None = None,
    rate: float | None = None,
    keys: KeyFn | None = point_key,
    stamp: bool = True,
    stop: StopLike | None = None,
    progress: Progress | None = None,
    clock: Clock = time.monotonic,
    now_ms: Callable[[], int] = wall_ms,
    sleep: Callable[[float], Any] = time.sleep,
    chunk: int = CHUNK,
    flush_timeout: float | None = None,
    gc_threshold: int | None = GC_THRESHOLD,
) -> PublishSummary:
    """Send ``points`` to ``topic``; return when ``count`` were sent, the source ends or
    ``stop`` is set (then the last chunk is finished and the producer flushed).

    ``rate`` (points/s) paces the stream with a token bucket; None sends as fast as
    the producer takes them. ``keys(i, point)`` gives the record key of the
    ``i``-th point (``point_key``: the point's own; ``entity_keys(k)``; None: no
    keys). ``stamp`` sets ``ts`` to ``now_ms()`` when each point is sent; without
    it a point's own ``ts`` is kept. ``progress(sent, elapsed)`` is called after
    every chunk. A failed delivery (raised by a flush) or a bus error while
    sending stops the loop; the summary says how many points were acknowledged
    and gives the error. ``flush_timeout`` bounds the last flush (None:
    `FLUSH_TIMEOUT_S`). ``clock``, ``now_ms`` and ``sleep`` are injectable.
    ``gc_threshold`` sets the youngest GC generation's threshold for the run (None:
    leave the collector alone); the previous one is restored at the end.
    """
    if count is not None and count < 0:
        raise ValueError(f"count: expected a number >= 0 or None, got {count}")
    with runtime.gc_threshold(gc_threshold):
        return _publish(
            points,
            producer,
            topic,
            count=count,
            rate=rate,
            keys=keys,
            stamp=stamp,
            stop=stop,
            progress=progress,
            clock=clock,
            now_ms=now_ms,
            sleep=sleep,
            chunk=chunk,
            flush_timeout=FLUSH_TIMEOUT_S if flush_timeout is None else flush_timeout,
        )


class _Acks:
    """What the broker acknowledged: the counts at the last successful flush.

    After a failed flush nothing more is acknowledged: a later flush would succeed
    without saying which of the earlier records were lost.
    """

    def __init__(self, producer: Producer, clock: Clock) -> None:
        self._producer = producer
        self._clock = clock
        self.sent = self.labelled = 0
        self.unflushed = 0
        self.last = clock()
        self.failed = False

    def due(self) -> bool:
        """True when enough points or time went by since the last flush."""
        return self.unflushed >= FLUSH_EVERY or self._clock() - self.last >= FLUSH_INTERVAL_S

    def last_flush(self, sent: int, labelled: int, timeout_s: float) -> str | None:
        """The flush at the end (none after a failed one: nothing more is acknowledged)."""
        if self.failed:
            return None
        return self.flush(sent, labelled, timeout_s)

    def flush(self, sent: int, labelled: int, timeout_s: float) -> str | None:
        """Flush; on success the points sent so far are acknowledged. The error, if any."""
        self.unflushed = 0
        self.last = self._clock()
        try:
            self._producer.flush(timeout_s)
        except BusError as exc:
            self.failed = True
            log.warning("points were not delivered: %s", exc)
            return f"delivery failed: {exc}"
        self.sent, self.labelled = sent, labelled
        return None


def _publish(
    points: Iterable[Point],
    producer: Producer,
    topic: str,
    *,
    count: int | None,
    rate: float | None,
    keys: KeyFn | None,
    stamp: bool,
    stop: StopLike | None,
    progress: Progress | None,
    clock: Clock,
    now_ms: Callable[[], int],
    sleep: Callable[[float], Any],
    chunk: int,
    flush_timeout: float,
) -> PublishSummary:
    """The loop of ``publish``."""
    partitions = Partitions(producer, topic, clock)  # may wait for metadata: before the pacer
    sender = _Sender(producer, topic, partitions, keys=keys, stamp=stamp, now_ms=now_ms)
    acks = _Acks(producer, clock)
    source: Iterator[Point] = iter(points)
    stopped = exhausted = False
    error: str | None = None
    pacer = Pacer(rate, clock=clock) if rate else None
    start = clock()
    try:
        while count is None or sender.sent < count:
            if stop is not None and stop.is_set():
                stopped = True
                break
            want = chunk if count is None else min(chunk, count - sender.sent)
            want = granted(pacer, want, stop, sleep)
            if not want:
                continue
            batch = list(islice(source, want))
            sender.send(batch, chunk)
            acks.unflushed += len(batch)
            if progress is not None:
                progress(sender.sent, clock() - start)
            if len(batch) < want:
                exhausted = True
                break
            if acks.due():
                error = acks.flush(sender.sent, sender.labelled, flush_timeout)
                if error is not None:
                    break
    except BusError as exc:
        error = f"sending to {topic!r} failed: {exc}"
    flushed = acks.last_flush(sender.sent, sender.labelled, flush_timeout)
    error = error or flushed
    return PublishSummary(
        sent=acks.sent,
        labelled=acks.labelled,
        failed=sender.sent - acks.sent,
        elapsed=clock() - start,
        stopped=stopped,
        exhausted=exhausted,
        error=error,
    )


class _Sender:
    """Sends points: keyed ones to their key's partition, the others to one partition a chunk."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        partitions: Partitions,
        *,
        keys: KeyFn | None,
        stamp: bool,
        now_ms: Callable[[], int],
    ) -> None:
        self._send = producer.send
        self._topic = topic
        self._partitions = partitions
        self._keys = keys
        self._stamp = stamp
        self._now_ms = now_ms
        self._in_chunk: int | None = None  # sent to the sticky partition; None: pick one
        self._sticky = -1
        self.sent = self.labelled = 0

    def send(self, batch: list[Point], chunk: int) -> None:
        """Send ``batch``; a new sticky partition first when ``chunk`` points went to the last."""
        partitions = self._partitions
        if self._in_chunk is None or self._in_chunk >= chunk:
            partitions.refresh()
            self._sticky = partitions.next_sticky()
            self._in_chunk = 0
        send, topic, keys, stamp, now_ms = (
            self._send,
            self._topic,
            self._keys,
            self._stamp,
            self._now_ms,
        )
        sticky, sent, labelled = self._sticky, self.sent, self.labelled
        try:  # the counts stay right when a send raises
            for point in batch:
                value = encode_point(point, now_ms() if stamp else point.ts)
                key = keys(sent, point) if keys is not None else None
                if key is None:
                    send(topic, value, partition=sticky)
                else:
                    raw = key.encode()
                    send(topic, value, key=raw, partition=partitions.for_key(raw))
                sent += 1
                if point.y is not None:
                    labelled += 1
        finally:
            self.sent, self.labelled = sent, labelled
        self._in_chunk += len(batch)
