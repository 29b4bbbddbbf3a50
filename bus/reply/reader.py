"""The reply thread of the gateway's reply client: read one ``replies`` partition.

A `ReplyReader` assigns itself one partition of ``replies`` (no consumer group),
chosen from the process's slot modulo the partition count, and hands every record
it reads to ``deliver``. It rides through transient bus faults (a broker restart)
and makes a new consumer after any other failure, resuming where it stopped
reading. It notes when Kafka last answered (`reachable`), probing it every
``probe_interval_s`` while no records come.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from bus.clients.base import Consumer, Driver, Record, TopicPartition, TransientBusError
from bus.partitions import wait_for_partitions
from bus.reply.tickets import close_quietly
from core.errors import BusError
from core.shutdown import StopFlag

log = logging.getLogger(__name__)

#: How long the reply thread's poll waits for records (a long poll, not a sleep).
POLL_S = 0.1

#: Backoff of the reply thread after a bus fault: first and longest wait.
BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0


class ReplyReader:
    """Reads this process's ``replies`` partition until ``stop`` is set (one per `start`)."""

    def __init__(
        self,
        driver: Driver,
        topic: str,
        deliver: Callable[[Record], None],
        stop: StopFlag,
        *,
        slot: int | None,
        probe_interval_s: float,
    ) -> None:
        self.driver = driver
        self.topic = topic
        self.deliver = deliver
        self.stop = stop
        self.slot = slot
        self.probe_interval_s = probe_interval_s
        self.partition: int | None = None  # set once the consumer is positioned
        self.positioned = threading.Event()
        self.next_offset: int | None = None
        self.reachable_at = float("-inf")
        self._backoff = BACKOFF_S
        self._failing_since: float | None = None
        self._next_probe = 0.0

    def reachable(self) -> bool:
        """True when the reply thread reached Kafka within the last few probe intervals."""
        return time.monotonic() - self.reachable_at < 3 * self.probe_interval_s

    def run(self) -> None:
        """Read the reply partition and hand replies over; ride through faults until stopped."""
        consumer: Consumer | None = None
        try:
            while not self.stop.is_set():
                try:
                    if consumer is None:
                        consumer = self._open()
                        if consumer is None:
                            break
                    self._read(consumer)
                except TransientBusError as exc:
                    self._fault(exc, transient=True)
                except Exception as exc:  # anything else: a new consumer
                    self._fault(exc, transient=False)
                    if consumer is not None:
                        close_quietly(consumer)
                    consumer = None
        finally:
            if consumer is not None:
                close_quietly(consumer)

    def _read(self, consumer: Consumer) -> None:
        """One poll: hand its records over, probe Kafka when due, note a recovery."""
        records = consumer.poll(POLL_S)
        deliver = self.deliver
        for record in records:
            self.next_offset = record.offset + 1
            deliver(record)
        if records:  # records came: Kafka answers
            self.reachable_at = time.monotonic()
        if time.monotonic() >= self._next_probe:
            consumer.end_offsets([TopicPartition(self.topic, 0)])
            self.reachable_at = time.monotonic()
            self._next_probe = self.reachable_at + self.probe_interval_s
        if self._failing_since is not None:
            log.info(
                "reply consumer on %r: working again after %.1f s",
                self.topic,
                time.monotonic() - self._failing_since,
            )
            self._failing_since, self._backoff = None, BACKOFF_S

    def _fault(self, exc: Exception, *, transient: bool) -> None:
        """Log a fault (its first time as a warning), then back off."""
        if transient:
            if self._failing_since is None:
                log.warning("reply consumer on %r: %s; retrying", self.topic, exc)
            else:
                log.debug("reply consumer on %r: %s", self.topic, exc)
        elif isinstance(exc, BusError):
            log.warning("reply consumer on %r: %s; opening a new consumer", self.topic, exc)
        else:
            log.error("reply consumer on %r failed; opening again", self.topic, exc_info=exc)
        self._failing_since = self._failing_since or time.monotonic()
        self._next_probe = 0.0
        self.stop.wait(self._backoff)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)

    def _open(self) -> Consumer | None:
        """A consumer assigned to this process's reply partition, positioned (None: stopped).

        The first time it starts at the partition's end (taken before any request
        names the partition, so every reply comes after it); a new consumer after a
        failure resumes where the last one stopped reading.
        """
        consumer = self.driver.consumer(group_id=None, max_poll_records=1000, fetch_max_wait_ms=500)
        try:
            if not wait_for_partitions(consumer, self.topic, None, stop=self.stop):
                close_quietly(consumer)
                return None
            count = len(consumer.partitions_for(self.topic))
            slot = os.getpid() if self.slot is None else self.slot
            partition = self.partition if self.partition is not None else slot % count
            tp = TopicPartition(self.topic, partition)
            consumer.assign([tp])
            start = self.next_offset
            if start is None:
                start = consumer.end_offsets([tp])[tp]
            consumer.seek(tp, start)
        except BaseException:
            close_quietly(consumer)
            raise
        self.next_offset = start
        self.reachable_at = time.monotonic()
        if self.partition is None:
            self.partition = partition
            log.info("reading replies on %s[%d]", self.topic, partition)
        self.positioned.set()
        return consumer
