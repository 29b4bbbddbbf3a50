"""Waiting for a topic's partitions to be known, the one way every reader does it.

A topic created a moment ago may not be in a client's metadata yet; joining a
group or assigning partitions before it is would leave the reader with nothing
to read. `wait_for_partitions` asks until the topic has partitions, retrying
transient faults, and fails with what to do when it never shows up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bus.clients.base import Consumer, TopicPartition, TransientBusError
from core.errors import BusError
from core.shutdown import StopFlag

log = logging.getLogger(__name__)

CHECK_EVERY_S = 0.1
LOG_AFTER_S = 2.0


def wait_for_partitions(
    consumer: Consumer,
    topic: str,
    timeout_s: float | None = 15.0,
    *,
    stop: StopFlag | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[int]:
    """The sorted partition ids of ``topic`` once they are known.

    ``timeout_s`` None waits until the topic exists or ``stop`` is set (then the
    answer is empty). After ``timeout_s`` a `BusError` says the topic is missing.
    """
    stop = stop or StopFlag()
    start = clock()
    logged = False
    while not stop.is_set():
        try:
            partitions = consumer.partitions_for(topic)
        except TransientBusError as exc:
            log.debug("asking for the partitions of %r: %s", topic, exc)
            partitions = []
        if partitions:
            return sorted(partitions)
        waited = clock() - start
        if timeout_s is not None and waited > timeout_s:
            raise BusError(
                f"topic {topic!r} does not exist (or has no partitions) after {waited:.0f}s; "
                "create it with `streamscore topics`, or check KAFKA_BOOTSTRAP_SERVERS and "
                "STREAMSCORE_TOPIC_PREFIX"
            )
        if not logged and waited >= LOG_AFTER_S:
            log.info("waiting for topic %r to exist", topic)
            logged = True
        stop.wait(CHECK_EVERY_S)
    return []


def topic_partitions(
    consumer: Consumer,
    topics: list[str],
    timeout_s: float | None = 15.0,
    *,
    stop: StopFlag | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[TopicPartition]:
    """Every partition of ``topics`` (waiting for each as `wait_for_partitions` does)."""
    return [
        TopicPartition(topic, p)
        for topic in topics
        for p in wait_for_partitions(consumer, topic, timeout_s, stop=stop, clock=clock)
    ]
