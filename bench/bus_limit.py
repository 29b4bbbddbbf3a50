"""1. The bus's own limit: raw kafka-python producer and consumer throughput for ``points`` values.

Both run in the benchmark's process with the project's client defaults
(``bus.clients``), on the contract's point message (3 features, labelled, ~125
bytes). The producer is measured twice: letting kafka-python's partitioner choose
(no key), and naming the partition (what the scorer does for unkeyed points).
"""

from __future__ import annotations

import time

from kafka.structs import TopicPartition

from bench.config import BenchConfig
from bench.context import BenchContext
from bench.data import CHUNK, dataset, point_values
from bench.report import BenchResult, ratio
from bus.clients import make_consumer, make_producer
from bus.settings import KafkaSettings

MB = 1_000_000


def produce(
    settings: KafkaSettings, topic: str, values: list[bytes], partitions: int | None
) -> tuple[float, float]:
    """Send ``values`` with the project's producer defaults and flush; (seconds, CPU seconds).

    ``partitions`` None lets the partitioner choose; else chunks of `CHUNK` records
    go to one partition after the other.
    """
    producer = make_producer(settings)
    producer.send(topic, value=values[0], partition=0).get(timeout=30)  # metadata, connection
    send = producer.send
    began, cpu = time.perf_counter(), time.process_time()
    if partitions is None:
        for value in values:
            send(topic, value=value)
    else:
        for i, value in enumerate(values):
            send(topic, value=value, partition=(i // CHUNK) % partitions)
    producer.flush()
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    producer.close()
    return seconds, cpu


def consume(settings: KafkaSettings, topic: str, count: int) -> tuple[int, int, float, float]:
    """Read ``count`` records of ``topic`` from its start, project consumer defaults.

    Returns (records, value bytes, seconds, CPU seconds), timed from the first record.
    """
    consumer = make_consumer(settings, group_id=None)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records = size = 0
    began = cpu = 0.0
    deadline = time.monotonic() + 600
    while records < count and time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=1000)
        if not records and polled:
            began, cpu = time.perf_counter(), time.process_time()
        for batch in polled.values():
            records += len(batch)
            size += sum(len(r.value) for r in batch)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    consumer.close()
    return records, size, seconds, cpu


def run(ctx: BenchContext, config: BenchConfig) -> BenchResult:
    """Fill (once), produce, consume; rows for each."""
    result = BenchResult("1. bus limit")
    data = dataset(ctx, config.points, max(config.partitions))
    fill = data.fill
    result.add(
        "fill (set-up)",
        "points written",
        ratio(fill.records, fill.seconds),
        "rec/s",
        note=f"{fill.records:,} points, {fill.processes} processes, acks=1, explicit partitions",
    )
    result.data["fill"] = fill

    values = point_values(config.producer_records, seed=99)
    size = sum(map(len, values))
    topic = ctx.create_topic(ctx.prefix("bus") + "produce", data.partitions, {})
    for case, partitions in (("partitioner picks", None), ("explicit partition", data.partitions)):
        seconds, cpu = produce(ctx.settings, topic, values, partitions)
        name = f"producer, {case}"
        result.add(name, "records/s", ratio(len(values), seconds), "rec/s")
        result.add(name, "MB/s", ratio(size / MB, seconds), "MB/s")
        result.add(name, "CPU per record", ratio(cpu * 1e6, len(values)), "µs")
        result.data[name] = {"records": len(values), "bytes": size, "seconds": seconds, "cpu": cpu}

    records, size, seconds, cpu = consume(ctx.settings, data.topics.points, data.count)
    result.add("consumer", "records/s", ratio(records, seconds), "rec/s")
    result.add("consumer", "MB/s", ratio(size / MB, seconds), "MB/s")
    result.add("consumer", "CPU per record", ratio(cpu * 1e6, records), "µs")
    result.data["consumer"] = {"records": records, "bytes": size, "seconds": seconds, "cpu": cpu}
    return result
