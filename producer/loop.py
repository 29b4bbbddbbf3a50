"""The send loop: publish points to the ``points`` topic, fast, paced and stoppable.

``publish(points, producer, topic, ...)`` takes any iterable of ``bus.messages.Point``
and a kafka-python producer (``bus.clients.make_producer``). It encodes each point
once with a fast path, hands it to the producer without waiting (batched by the
producer, no per-point flush), optionally paces the stream with a token bucket,
stamps ``ts`` with the send time, and flushes once at the end.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from json.encoder import encode_basestring_ascii
from typing import Any, Protocol

from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from bus.messages import Point, dump_object
from producer.sources import KeyedPoint
from streamscore.errors import BusError, MessageError

log = logging.getLogger(__name__)

#: Points sent between two looks at the stop flag, the clock and delivery errors;
#: unkeyed points of one chunk go to one partition (like Kafka's sticky partitioner).
CHUNK = 1000
#: At most this many chunks may wait for the broker's acknowledgement before the
#: loop waits for the oldest (kafka-python 3 has no buffer limit of its own).
MAX_PENDING_CHUNKS = 100
#: A token bucket holds at most this many seconds' worth of points: enough that a
#: scheduling stall of the sending thread does not lose tokens (and rate).
BURST_SECONDS = 0.1
#: Rounding slack of the token bucket (clocks are floats).
_EPSILON = 1e-6
#: While publishing, the youngest GC generation is collected after this many
#: allocations instead of 700: each send allocates several short-lived objects, and
#: frequent collections cost the loop about a fifth of its time.
GC_THRESHOLD = 50_000

KeyFn = Callable[[int, Point], str | None]
Clock = Callable[[], float]


class StopLike(Protocol):
    """What the loop needs of a stop flag (``streamscore.shutdown.StopFlag``)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float) -> bool: ...


def wall_ms() -> int:
    """The current time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


# --- keys ---------------------------------------------------------------------------


def point_key(_index: int, point: Point) -> str | None:
    """The key a point brings with it (``KeyedPoint.key``, e.g. a CSV ``key`` column)."""
    return point.key if isinstance(point, KeyedPoint) else None


def entity_keys(k: int, prefix: str = "entity-") -> KeyFn:
    """Keys ``entity-<i mod k>`` for the ``i``-th point of the run."""
    if k < 1:
        raise ValueError(f"expected at least 1 key, got {k}")
    names = [f"{prefix}{i}" for i in range(k)]

    def key(index: int, _point: Point) -> str | None:
        return names[index % k]

    return key


# --- encoding -----------------------------------------------------------------------

_float_repr = float.__repr__


def encode_point(point: Point, ts: int | None) -> bytes:
    """The ``points`` value of ``point`` with event time ``ts`` (left out when None).

    Float features and labels take a fast path (the bytes ``json.dumps`` would
    make); other numbers (ints, numpy scalars) go through ``bus.messages``.
    Non-finite numbers and an empty ``x`` raise ``MessageError``.
    """
    try:
        xs = ",".join(map(_float_repr, point.x))
        y = point.y
        ys = "" if y is None else ',"y":' + _float_repr(y)
    except TypeError:
        return _encode_slow(point, ts)
    # A float's repr holds an "n" only when it is nan or inf; '"y":' has none.
    if "n" in xs or "n" in ys or not xs:
        raise MessageError(
            f"point {point.id!r}: x and y must be finite numbers and x not empty, "
            f"got x={point.x!r} y={point.y!r}"
        )
    ident = encode_basestring_ascii(point.id)
    if ts is None:
        return f'{{"id":{ident},"x":[{xs}]{ys}}}'.encode()
    return f'{{"id":{ident},"x":[{xs}]{ys},"ts":{ts:d}}}'.encode()


def _encode_slow(point: Point, ts: int | None) -> bytes:
    """Validate and encode a point whose numbers are not all Python floats."""
    obj: dict[str, Any] = {"id": point.id, "x": point.x}
    if point.y is not None:
        obj["y"] = point.y
    if ts is not None:
        obj["ts"] = ts
    try:
        checked = Point.from_json(_plain(obj))
    except MessageError as exc:
        raise MessageError(f"point {point.id!r}: {exc}") from None
    return dump_object(checked.to_json())


def _plain(obj: dict[str, Any]) -> dict[str, Any]:
    """Numbers as Python floats (numpy scalars and the like have ``__float__``)."""

    def number(v: Any) -> Any:
        return v if type(v) in (int, float) or not hasattr(v, "__float__") else float(v)

    out = dict(obj)
    out["x"] = [number(v) for v in obj["x"]] if isinstance(obj["x"], list | tuple) else obj["x"]
    if "y" in obj:
        out["y"] = number(obj["y"])
    return out


# --- pacing -------------------------------------------------------------------------


class Pacer:
    """A token bucket: lets ``rate`` points per second through on average.

    ``grant(n)`` says how many of ``n`` points may go now (and takes them);
    ``delay()`` how long to wait for the next one. The bucket holds at most
    ``burst`` points (default: 100 ms worth, at least one), so after a pause the
    stream does not rush to catch up by more than that. The clock is injected.
    """

    def __init__(self, rate: float, *, clock: Clock = time.monotonic, burst: int = 0) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate: expected a number of points per second > 0, got {rate}")
        self.rate = rate
        self.burst = burst or max(1, int(rate * BURST_SECONDS))
        self._clock = clock
        self._tokens = 1.0
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now

    def grant(self, n: int) -> int:
        """How many of ``n`` points may be sent now; they are taken from the bucket."""
        self._refill()
        allowed = min(n, int(self._tokens + _EPSILON))  # 4.9999999 tokens are 5
        self._tokens -= allowed
        return allowed

    def delay(self) -> float:
        """Seconds until the next point may go (0 if one may go now)."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self.rate)


# --- partitions ---------------------------------------------------------------------


class _Partitions:
    """Chooses partitions like Kafka's default partitioner, without its per-record cost.

    Keyed records go to ``murmur2(key) % n`` (the Java client's choice, cached per
    key); unkeyed records go to one partition per chunk, round-robin.
    """

    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._partitions: list[int] = []
        self._by_key: dict[bytes, int] = {}
        self._turn = -1  # the first chunk goes to the first partition
        self.refresh()

    def refresh(self) -> None:
        """Re-read the topic's partitions (cheap: the producer caches its metadata)."""
        try:
            found = self._producer.partitions_for(self._topic)
        except KafkaError as exc:
            raise BusError(f"cannot get the partitions of topic {self._topic!r}: {exc}") from exc
        partitions = sorted(found or ())
        if not partitions:
            raise BusError(f"topic {self._topic!r} has no partitions (does it exist?)")
        if partitions != self._partitions:
            self._partitions = partitions
            self._by_key.clear()

    def next_sticky(self) -> int:
        """The partition for the next chunk of unkeyed records."""
        self._turn = (self._turn + 1) % len(self._partitions)
        return self._partitions[self._turn]

    def for_key(self, key: bytes) -> int:
        """The partition of ``key``."""
        partition = self._by_key.get(key)
        if partition is None:
            if len(self._by_key) >= 100_000:
                self._by_key.clear()
            index = (murmur2(key) & 0x7FFFFFFF) % len(self._partitions)
            partition = self._by_key[key] = self._partitions[index]
        return partition


# --- delivery -----------------------------------------------------------------------


class _Deliveries:
    """Counts records the producer failed to deliver and keeps the first error."""

    def __init__(self) -> None:
        self.failed = 0
        self.error: str | None = None

    def on_error(self, exc: BaseException) -> None:
        self.failed += 1
        if self.error is None:
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("a point was not delivered: %s", self.error)


@dataclass(frozen=True)
class PublishSummary:
    """What a run of ``publish`` did."""

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
    producer: Any,
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
    keys). ``stamp`` sets ``ts`` (and the record timestamp) to ``now_ms()`` when each
    point is sent; without it a point's own ``ts`` is kept. ``progress(sent,
    elapsed)`` is called after every chunk. Delivery failures stop the loop: they
    are counted in ``failed`` and the first is in ``error``; so is a Kafka error
    raised while sending. ``clock``, ``now_ms`` and ``sleep`` are injectable.
    ``gc_threshold`` sets the youngest GC generation's threshold for the run (None:
    leave the collector alone); the previous one is restored at the end.
    """
    if count is not None and count < 0:
        raise ValueError(f"count: expected a number >= 0 or None, got {count}")
    with _gc_threshold(gc_threshold):
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
            flush_timeout=flush_timeout,
        )


@contextlib.contextmanager
def _gc_threshold(threshold: int | None) -> Iterator[None]:
    """Collect the youngest generation after ``threshold`` allocations for a while."""
    if threshold is None:
        yield
        return
    before = gc.get_threshold()
    gc.set_threshold(threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _publish(
    points: Iterable[Point],
    producer: Any,
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
    flush_timeout: float | None,
) -> PublishSummary:
    """The loop of ``publish``."""
    partitions = _Partitions(producer, topic)  # may wait for metadata: before the pacer
    deliveries = _Deliveries()
    on_error = deliveries.on_error
    pending: deque[Any] = deque()
    send = producer.send
    source: Iterator[Point] = iter(points)
    sent = labelled = 0
    in_chunk = chunk  # records sent to the current sticky partition; full: pick the next
    sticky = -1
    stopped = exhausted = False
    error: str | None = None
    pacer = Pacer(rate, clock=clock) if rate else None
    start = clock()
    try:
        while count is None or sent < count:
            if stop is not None and stop.is_set():
                stopped = True
                break
            if deliveries.failed:
                break
            want = chunk if count is None else min(chunk, count - sent)
            if pacer is not None:
                want = pacer.grant(want)
                if not want:
                    wait = pacer.delay()
                    if stop is not None:
                        stop.wait(wait)
                    else:
                        sleep(wait)
                    continue
            batch = list(islice(source, want))
            if in_chunk >= chunk:
                partitions.refresh()
                sticky = partitions.next_sticky()
                in_chunk = 0
            future = None
            for point in batch:
                ts = now_ms() if stamp else point.ts
                value = encode_point(point, ts)
                key = keys(sent, point) if keys is not None else None
                if key is None:
                    future = send(topic, value, partition=sticky, timestamp_ms=ts)
                else:
                    raw = key.encode()
                    partition = partitions.for_key(raw)
                    future = send(topic, value, key=raw, partition=partition, timestamp_ms=ts)
                future.add_errback(on_error)
                sent += 1
                if point.y is not None:
                    labelled += 1
            in_chunk += len(batch)
            if future is not None:
                _bound_pending(pending, future)
            if progress is not None:
                progress(sent, clock() - start)
            if len(batch) < want:
                exhausted = True
                break
    except KafkaError as exc:
        error = f"sending to {topic!r} failed: {type(exc).__name__}: {exc}"
    try:
        producer.flush(timeout=flush_timeout)
    except KafkaError as exc:
        error = error or f"flush failed: {type(exc).__name__}: {exc}"
    elapsed = clock() - start
    if deliveries.error is not None:
        error = error or f"{deliveries.failed} point(s) not delivered: {deliveries.error}"
    return PublishSummary(
        sent=sent - deliveries.failed,
        labelled=labelled,
        failed=deliveries.failed,
        elapsed=elapsed,
        stopped=stopped,
        exhausted=exhausted,
        error=error,
    )


def _bound_pending(pending: deque[Any], future: Any) -> None:
    """Remember the chunk's last future; wait for the oldest when too many are open."""
    pending.append(future)
    while pending and pending[0].is_done:
        pending.popleft()
    if len(pending) > MAX_PENDING_CHUNKS:
        with contextlib.suppress(KafkaError):  # a failure is counted by the errback
            pending.popleft().get()
