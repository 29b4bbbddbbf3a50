"""Warm a broker the bench has just started: a JVM runs slowly until it has compiled its paths.

Measured on 2 cores: the same gateway stack did 367-608 requests/s in the first 30 s
of load after a broker start, then 707-844 (the broker's CPU per answer fell from
1.4-2.8 ms to 0.6-0.7 ms). A bench that starts its broker therefore first sends it
small records and reads them back, in many small requests (produce and fetch, as the
services do), for `WARMUP_S` seconds (``BENCH_BROKER_WARMUP_S``; 0: none).
"""

from __future__ import annotations

import time

from bus.clients import driver_for
from bus.clients.base import TopicPartition
from bus.settings import KafkaSettings

#: Seconds of small produce and fetch requests before the first figure.
WARMUP_S = 30.0
#: Records per produce request (small, like a gateway's or a scorer's).
BURST = 20


def warm_broker(settings: KafkaSettings, topic: str, partitions: int, seconds: float) -> int:
    """Send small bursts to ``topic`` and read them back for ``seconds``; records read."""
    driver = driver_for(settings)
    producer = driver.producer(linger_ms=0)
    consumer = driver.consumer(group_id=None, fetch_max_wait_ms=10)
    read = 0
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        deadline = time.monotonic() + seconds
        sent = 0
        while time.monotonic() < deadline:
            for _ in range(BURST):
                producer.send(topic, b'{"x": [0.5, -0.25, 1.0]}', key=str(sent).encode())
                sent += 1
            producer.flush()
            read += len(consumer.poll(0.05))
    finally:
        producer.close()
        consumer.close()
    return read
