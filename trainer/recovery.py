"""Reading back, at start, the latest checkpoint and the latest published versions.

Both live on compacted topics whose newest records are the ones that matter, so
they are read from the end backwards, in growing windows, until what is wanted
is found (or the beginning is reached): a start costs what was written recently,
not the topic's whole history. Reads are read_committed, after the trainer's
producer has fenced any previous instance (``init_transactions``), so no
half-written publication can be seen or appear afterwards.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from bus.clients import make_consumer
from bus.settings import KafkaSettings
from streamscore.errors import BusError
from trainer.state import Checkpoint, Headers, assemble_checkpoint, part_key

log = logging.getLogger(__name__)

FIRST_WINDOW = 1000
READ_TIMEOUT_S = 30.0


def wait_for_partitions(consumer: KafkaConsumer, topic: str, timeout_s: float) -> list[int]:
    """The partition numbers of ``topic`` once its metadata is known; BusError if none."""
    deadline = time.monotonic() + timeout_s
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return sorted(partitions)
        if time.monotonic() > deadline:
            raise BusError(f"topic {topic!r} does not exist; create it with `streamscore topics`")
        time.sleep(0.1)


def _read_range(consumer: KafkaConsumer, tp: TopicPartition, lo: int, hi: int) -> list[Any]:
    """The committed records of ``tp`` with offsets in [lo, hi)."""
    consumer.seek(tp, lo)
    out: list[ConsumerRecord] = []
    deadline = time.monotonic() + READ_TIMEOUT_S
    while consumer.position(tp) < hi:
        if time.monotonic() > deadline:
            raise BusError(f"reading {tp.topic}[{tp.partition}] {lo}..{hi} timed out")
        for records in consumer.poll(timeout_ms=200).values():
            out.extend(r for r in records if r.offset < hi)
    return out


def read_back(
    consumer: KafkaConsumer,
    tp: TopicPartition,
    enough: Callable[[list[ConsumerRecord]], bool],
    first_window: int = FIRST_WINDOW,
) -> list[ConsumerRecord]:
    """Records of ``tp`` from the end backwards (in offset order) until ``enough`` says so."""
    consumer.assign([tp])
    begin = consumer.beginning_offsets([tp])[tp]
    end = consumer.end_offsets([tp])[tp]  # read_committed: the last stable offset
    records: list[ConsumerRecord] = []
    start, window = end, first_window
    while start > begin:
        lo = max(begin, start - window)
        records = _read_range(consumer, tp, lo, start) + records
        start = lo
        if enough(records):
            break
        window *= 4
    return records


def _latest(records: list[ConsumerRecord]) -> dict[bytes, tuple[bytes | None, Headers]]:
    latest: dict[bytes, tuple[bytes | None, Headers]] = {}
    for record in records:
        if record.key is not None:
            latest[record.key] = (record.value, list(record.headers or []))
    return latest


def read_checkpoint(
    settings: KafkaSettings, topic: str, group: str
) -> tuple[Checkpoint | None, int]:
    """The group's latest checkpoint on ``topic`` and its number of parts ((None, 0): none)."""
    key = part_key(group, 0)
    latest: dict[bytes, tuple[bytes | None, Headers]] = {}
    consumer = make_consumer(settings, group_id=None)
    try:
        for partition in wait_for_partitions(consumer, topic, 15.0):
            tp = TopicPartition(topic, partition)
            found = read_back(consumer, tp, lambda rs: any(r.key == key for r in rs))
            if any(r.key == key for r in found):
                latest = _latest(found)
                break
    except KafkaError as exc:
        raise BusError(f"cannot read the trainer state on {topic!r}: {exc}") from exc
    finally:
        consumer.close()
    return assemble_checkpoint(latest, group)


def read_versions(settings: KafkaSettings, topic: str, names: Collection[str]) -> dict[str, int]:
    """The latest version on ``topic`` of each of ``names`` that has one.

    Versions only go up, so the newest record of a name holds its highest version.
    """
    keys = {name.encode(): name for name in names}
    versions: dict[str, int] = {}
    consumer = make_consumer(settings, group_id=None)
    try:
        for partition in wait_for_partitions(consumer, topic, 15.0):
            tp = TopicPartition(topic, partition)
            found = read_back(consumer, tp, lambda rs: keys.keys() <= {r.key for r in rs})
            for record in found:
                name = keys.get(record.key)
                version = _version(record.value) if name is not None else None
                if name is not None and version is not None:
                    versions[name] = max(versions.get(name, 0), version)
    except KafkaError as exc:
        raise BusError(f"cannot read the published models on {topic!r}: {exc}") from exc
    finally:
        consumer.close()
    return versions


def _version(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        version = json.loads(value).get("version")
    except (ValueError, AttributeError, RecursionError):
        return None
    return version if type(version) is int else None
