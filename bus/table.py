"""Following a compacted topic: models for the scorer, trainer state, the gateway's catalogue.

`Table` reads every partition of one topic itself (manual assignment, no
consumer group, read_committed), through a consumer its driver makes:

- `catch_up` reads up to the end offsets taken when the table was opened
  ("caught up": the position of every partition at or past its end offset);
- `poll` returns what arrived since, and starts reading partitions added to the
  topic later; transient faults are retried (they return nothing) until
  ``retry_s`` of them in a row make a `BusError`;
- tombstones (value None) come through as records; with ``keep_latest`` the
  table also keeps the latest record of every key (a tombstone removes it);
- ``tail`` reads only the last records of each partition (for a topic that is
  not compacted, e.g. the gateway's ``scores``);
- `read_back` reads one partition from its end backwards, in growing windows,
  until the caller has what it wants (the trainer's checkpoint and versions):
  a start costs what was written recently, not the topic's whole history.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from bus.clients.base import Consumer, Driver, Record, TopicPartition, TransientBusError
from bus.partitions import wait_for_partitions
from core.errors import BusError
from core.shutdown import StopFlag

log = logging.getLogger(__name__)

DEFAULT_RETRY_S = 300.0
FIRST_WINDOW = 1000
READ_TIMEOUT_S = 30.0
POLL_S = 0.2
MAX_BACKOFF_S = 5.0


class Table:
    """Reads one topic from its beginning (or its tail), every partition, no consumer group."""

    def __init__(
        self,
        driver: Driver,
        topic: str,
        *,
        keep_latest: bool = False,
        tail: int | None = None,
        topic_wait_s: float | None = 15.0,
        retry_s: float = DEFAULT_RETRY_S,
        partition_check_s: float = 30.0,
        backoff_s: float = 0.1,
        stop: StopFlag | None = None,
        clock: Callable[[], float] = time.monotonic,
        consumer_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._driver = driver
        self.topic = topic
        self._tail = tail
        self._topic_wait_s = topic_wait_s
        self._retry_s = retry_s
        self._partition_check_s = partition_check_s
        self._stop = stop or StopFlag()
        self._clock = clock
        self._options = dict(consumer_options or {})
        self.latest: dict[bytes, Record] | None = {} if keep_latest else None
        self._consumer: Consumer | None = None
        self._partitions: list[TopicPartition] = []
        self._targets: dict[TopicPartition, int] = {}
        self._caught_up = False
        self._next_check = 0.0
        self._fault_since: float | None = None
        self._backoff_start = self._backoff = backoff_s

    # --- following ---------------------------------------------------------------------

    def open(self) -> Table:
        """Assign every partition, from the beginning (or the tail); note where they end.

        Transient bus faults (a broker restarting, a seek the client refuses for a
        moment) are ridden through as in `poll`, for ``retry_s`` at most; then a
        `BusError`. Returns at once when stopped.
        """
        while True:
            try:
                self._open()
            except TransientBusError as exc:
                self._fault(exc)
                if self._stop.is_set():
                    return self
                continue
            if self._fault_since is not None:
                log.info(
                    "opened %r after %.1f s of faults",
                    self.topic,
                    self._clock() - self._fault_since,
                )
                self._fault_since, self._backoff = None, self._backoff_start
            return self

    def _open(self) -> None:
        consumer = self._client()
        ids = wait_for_partitions(consumer, self.topic, self._topic_wait_s, stop=self._stop)
        self._partitions = [TopicPartition(self.topic, p) for p in ids]
        consumer.assign(self._partitions)
        self._targets = consumer.end_offsets(self._partitions)
        self._place(self._partitions, self._targets)
        self._caught_up = False
        self._next_check = self._clock() + self._partition_check_s

    @property
    def partitions(self) -> list[TopicPartition]:
        """The partitions read (after `open`)."""
        return list(self._partitions)

    def caught_up(self) -> bool:
        """True once every partition was read up to where it ended when the table was opened."""
        if not self._caught_up:
            consumer = self._opened()
            self._caught_up = all(consumer.position(tp) >= end for tp, end in self._targets.items())
        return self._caught_up

    def catch_up(self, timeout_s: float = 30.0) -> list[Record]:
        """Read up to the end offsets taken at `open`; return the records read."""
        deadline = self._clock() + timeout_s
        out: list[Record] = []
        while not self.caught_up():
            if self._clock() > deadline:
                raise BusError(
                    f"could not read topic {self.topic!r} to its end within {timeout_s:.0f}s "
                    f"({self._progress()}); is the broker overloaded or the topic huge?"
                )
            if self._stop.is_set():
                break
            out += self.poll(POLL_S)
        return out

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        """Records that arrived (tombstones included); empty after a transient fault."""
        consumer = self._opened()
        try:
            if self._clock() >= self._next_check:
                self._watch_partitions(consumer)
            records = consumer.poll(timeout_s, max_records)
        except TransientBusError as exc:
            self._fault(exc)
            return []
        if self._fault_since is not None:
            log.info(
                "reading %r again after %.1f s of faults",
                self.topic,
                self._clock() - self._fault_since,
            )
            self._fault_since = None
            self._backoff = self._backoff_start
        latest = self.latest
        if latest is not None:
            for record in records:
                if record.key is None:
                    continue
                if record.value is None:
                    latest.pop(record.key, None)
                else:
                    latest[record.key] = record
        return records

    def close(self) -> None:
        """Close the consumer."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except BusError as exc:
                log.debug("closing the reader of %r: %s", self.topic, exc)

    def __enter__(self) -> Table:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- reading back ------------------------------------------------------------------

    def partition_ids(self) -> list[int]:
        """The topic's partition ids (waiting for the topic to exist)."""
        return wait_for_partitions(self._client(), self.topic, self._topic_wait_s, stop=self._stop)

    def read_back(
        self,
        partition: int,
        enough: Callable[[list[Record]], bool],
        first_window: int = FIRST_WINDOW,
    ) -> list[Record]:
        """Records of one partition, from its end backwards, until ``enough(records)`` holds.

        Reads windows of ``first_window`` records, four times larger each time; the
        records come in offset order. Assigns the table's consumer to that one
        partition: read back before following (`open`), not while. A transient
        fault (or a window that takes over ``READ_TIMEOUT_S``) raises
        `TransientBusError`, for the caller to try again; the stop flag ends the
        reading early, with what was read so far.
        """
        consumer = self._client()
        tp = TopicPartition(self.topic, partition)
        try:
            consumer.assign([tp])
            self._partitions = []
            end = consumer.end_offsets([tp])[tp]  # read_committed: the last stable offset
            records: list[Record] = []
            start, window = end, first_window
            while start > 0 and not self._stop.is_set():
                low = max(0, start - window)
                records = self._read_range(consumer, tp, low, start) + records
                start = low
                if enough(records):
                    break
                window *= 4
        except TransientBusError as exc:
            raise TransientBusError(
                f"reading {self.topic}[{partition}] back failed: {exc}; check the broker "
                "and try again"
            ) from exc
        return records

    def _read_range(
        self, consumer: Consumer, tp: TopicPartition, low: int, high: int
    ) -> list[Record]:
        """The committed records of ``tp`` with offsets in [low, high).

        Offsets below the log's start are reset to it (``auto_offset_reset`` earliest).
        """
        consumer.seek(tp, low)
        out: list[Record] = []
        deadline = self._clock() + READ_TIMEOUT_S
        while consumer.position(tp) < high and not self._stop.is_set():
            if self._clock() > deadline:
                raise TransientBusError(
                    f"reading {tp.topic}[{tp.partition}] offsets {low}..{high} took over "
                    f"{READ_TIMEOUT_S:.0f}s; is the broker overloaded?"
                )
            out += [r for r in consumer.poll(POLL_S) if r.offset < high]
        return out

    # --- inside ------------------------------------------------------------------------

    def _client(self) -> Consumer:
        if self._consumer is None:
            options = {**self._options, "group_id": None, "read_committed": True}
            self._consumer = self._driver.consumer(**options)
        return self._consumer

    def _opened(self) -> Consumer:
        if self._consumer is None or not self._partitions:
            raise BusError(f"the reader of {self.topic!r} is not open: call open() first")
        return self._consumer

    def _place(self, partitions: list[TopicPartition], ends: Mapping[TopicPartition, int]) -> None:
        """Seek to the beginning, or ``tail`` records before the end."""
        consumer = self._client()
        if self._tail is None:
            consumer.seek_to_beginning(partitions)
            return
        for tp in partitions:
            consumer.seek(tp, max(0, ends[tp] - self._tail))

    def _watch_partitions(self, consumer: Consumer) -> None:
        """Start reading partitions added to the topic since the last check."""
        self._next_check = self._clock() + self._partition_check_s
        found = [TopicPartition(self.topic, p) for p in consumer.partitions_for(self.topic)]
        new = [tp for tp in found if tp not in self._partitions]
        if not new:
            return
        log.info(
            "%r has new partitions %s: reading them too", self.topic, [tp.partition for tp in new]
        )
        positions = {tp: consumer.position(tp) for tp in self._partitions}
        self._partitions = sorted([*self._partitions, *new])
        consumer.assign(self._partitions)
        unread = list(new)
        for tp, position in positions.items():
            if position >= 0:
                consumer.seek(tp, position)
            else:  # never fetched: place it as at the start
                unread.append(tp)
        ends = consumer.end_offsets(unread) if self._tail is not None else {}
        self._place(unread, ends)

    def _fault(self, exc: TransientBusError) -> None:
        now = self._clock()
        if self._fault_since is None:
            self._fault_since = now
            log.warning("reading %r failed (%s); retrying", self.topic, exc)
        else:
            log.debug("reading %r failed again: %s", self.topic, exc)
        if now - self._fault_since >= self._retry_s:
            raise BusError(
                f"reading {self.topic!r} has failed for {now - self._fault_since:.0f}s "
                f"(last: {exc}); check that the brokers (KAFKA_BOOTSTRAP_SERVERS) are up"
            ) from exc
        self._stop.wait(self._backoff)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)

    def _progress(self) -> str:
        consumer = self._opened()
        return ", ".join(
            f"[{tp.partition}] {consumer.position(tp)}/{end}" for tp, end in self._targets.items()
        )
