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
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from json.encoder import encode_basestring_ascii
from typing import Any, Protocol

from bus.clients.base import Producer
from bus.messages import MAX_ABS_INPUT, MAX_FEATURES, MAX_ID_CHARS, Point, dump_object
from core import runtime
from core.errors import BusError, MessageError
from producer.sources import KeyedPoint

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
#: How often the topic's partition count is read again (new partitions are used).
PARTITIONS_REFRESH_S = 10.0
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
    """What the loop needs of a stop flag (``core.shutdown.StopFlag``)."""

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
    What the contract refuses raises ``MessageError``: non-finite numbers or
    numbers beyond ±``MAX_ABS_INPUT``, an empty ``x`` or one with more than
    ``MAX_FEATURES`` features, an id that is empty or longer than ``MAX_ID_CHARS``.
    """
    x, y = point.x, point.y
    try:
        xs = ",".join(map(_float_repr, x))
        ys = "" if y is None else ',"y":' + _float_repr(y)
    except TypeError:
        return _encode_slow(point, ts)
    # A float's repr holds an "n" only when it is nan or inf; '"y":' has none.
    if "n" in xs or "n" in ys or not xs or len(x) > MAX_FEATURES:
        raise MessageError(
            f"point {point.id!r}: x and y must be finite numbers and x not empty "
            f"(at most {MAX_FEATURES} features), got x={_short(x)} y={y!r}"
        )
    if (
        max(x) > MAX_ABS_INPUT
        or min(x) < -MAX_ABS_INPUT
        or (y is not None and not -MAX_ABS_INPUT <= y <= MAX_ABS_INPUT)
    ):
        raise MessageError(
            f"point {point.id!r}: x and y must be within ±{MAX_ABS_INPUT:g}, "
            f"got x={_short(x)} y={y!r}"
        )
    if not 0 < len(point.id) <= MAX_ID_CHARS:
        raise MessageError(
            f"point id {point.id[:40]!r}: expected 1 to {MAX_ID_CHARS} characters, "
            f"got {len(point.id)}"
        )
    ident = encode_basestring_ascii(point.id)
    if ts is None:
        return f'{{"id":{ident},"x":[{xs}]{ys}}}'.encode()
    return f'{{"id":{ident},"x":[{xs}]{ys},"ts":{ts:d}}}'.encode()


def _short(values: list[float]) -> str:
    """At most the first 8 values, for a message."""
    return repr(values) if len(values) <= 8 else repr(values[:8])[:-1] + ", ...]"


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

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` (the Java client's ``Utils.murmur2``), unsigned 32 bits."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    end = length & ~3
    for i in range(0, end, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's Java client (and kafka-python) gives ``key`` among ``partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class _Partitions:
    """Chooses partitions like Kafka's default partitioner, without its per-record cost.

    Keyed records go to ``murmur2(key) % n`` (the Java client's choice, cached per
    key); unkeyed records go to one partition per chunk, round-robin. The count
    of partitions is read again every `PARTITIONS_REFRESH_S` seconds.
    """

    def __init__(self, producer: Producer, topic: str, clock: Clock) -> None:
        self._producer = producer
        self._topic = topic
        self._clock = clock
        self._count = 0
        self._by_key: dict[bytes, int] = {}
        self._turn = -1  # the first chunk goes to the first partition
        self._next_refresh = 0.0
        self.refresh()

    def refresh(self) -> None:
        """Re-read the topic's partition count when it is time to."""
        now = self._clock()
        if now < self._next_refresh:
            return
        self._next_refresh = now + PARTITIONS_REFRESH_S
        try:
            count = self._producer.partition_count(self._topic)
        except BusError as exc:
            raise BusError(
                f"cannot get the partitions of topic {self._topic!r}: {exc}; does it exist? "
                "(`streamscore topics` creates it)"
            ) from exc
        if count < 1:
            raise BusError(f"topic {self._topic!r} has no partitions (does it exist?)")
        if count != self._count:
            self._count = count
            self._by_key.clear()

    def next_sticky(self) -> int:
        """The partition for the next chunk of unkeyed records."""
        self._turn = (self._turn + 1) % self._count
        return self._turn

    def for_key(self, key: bytes) -> int:
        """The partition of ``key``."""
        partition = self._by_key.get(key)
        if partition is None:
            if len(self._by_key) >= 100_000:
                self._by_key.clear()
            partition = self._by_key[key] = key_partition(key, self._count)
        return partition


# --- delivery -----------------------------------------------------------------------


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
    partitions = _Partitions(producer, topic, clock)  # may wait for metadata: before the pacer
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
            want = _granted(pacer, want, stop, sleep)
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


def _granted(
    pacer: Pacer | None, want: int, stop: StopLike | None, sleep: Callable[[float], Any]
) -> int:
    """How many of ``want`` points the pacer (if any) lets go now; none: it waited a while."""
    if pacer is None:
        return want
    want = pacer.grant(want)
    if not want:
        wait = pacer.delay()
        if stop is not None:
            stop.wait(wait)
        else:
            sleep(wait)
    return want


class _Sender:
    """Sends points: keyed ones to their key's partition, the others to one partition a chunk."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        partitions: _Partitions,
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
