"""Reading back, at start, the latest checkpoint and the latest published versions.

Both live on compacted topics whose newest records are the ones that matter, so
they are read from the end backwards (`bus.table.Table.read_back`), in growing
windows, until what is wanted is found (or the beginning is reached): a start
costs what was written recently, not the topic's whole history. Reads are
read_committed, after the trainer's producer has fenced any previous instance
(the stream kernel calls the step's start once its transactional id is held), so
no half-written publication can be seen or appear afterwards.

Every partition of each topic is read: a checkpoint is found wherever it was
written (the newest, by its sequence number, wins), and a model name's highest
version wherever it is. A transient fault raises `TransientBusError` (the kernel
starts again); the stop flag ends the reading early (the result is then
incomplete: the caller checks the flag).
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from bus.clients.base import Driver, Record, TopicPartition
from bus.messages import MAX_VERSION
from bus.partitions import wait_for_partitions
from bus.table import Table
from bus.topics import Topics
from core.shutdown import StopFlag
from trainer.state import Checkpoint, Headers, assemble_checkpoint, part_key

log = logging.getLogger(__name__)

TOPIC_WAIT_S = 15.0


@dataclass
class Found:
    """The group's latest checkpoint (None: none), its parts, and where it is kept."""

    checkpoint: Checkpoint | None
    parts: int
    partition: int


def read_checkpoint(driver: Driver, topic: str, group: str, stop: StopFlag) -> Found:
    """The group's latest checkpoint on ``topic`` (the newest if several partitions hold one).

    ``partition`` is where the next one goes: where this one was found, or a
    partition chosen by the group's name when there is none.
    """
    key = part_key(group, 0)
    best: Found | None = None
    with Table(driver, topic, topic_wait_s=TOPIC_WAIT_S, stop=stop) as table:
        partitions = table.partition_ids()
        for partition in partitions:
            found = table.read_back(partition, lambda rs: any(r.key == key for r in rs))
            if not any(r.key == key for r in found):
                continue
            checkpoint, parts = assemble_checkpoint(_latest(found), group)
            if checkpoint is not None and (best is None or _seq(best) < checkpoint.seq):
                best = Found(checkpoint, parts, partition)
            elif checkpoint is None and best is None:  # deleted: a fresh start, kept here
                best = Found(None, 0, partition)
    if best is not None:
        return best
    home = partitions[zlib.crc32(key) % len(partitions)] if partitions else 0
    return Found(None, 0, home)


def _seq(found: Found) -> int:
    return -1 if found.checkpoint is None else found.checkpoint.seq


def _latest(records: list[Record]) -> dict[bytes, tuple[bytes | None, Headers]]:
    latest: dict[bytes, tuple[bytes | None, Headers]] = {}
    for record in records:
        if record.key is not None:
            latest[record.key] = (record.value, list(record.headers))
    return latest


def read_versions(
    driver: Driver, topic: str, names: Collection[str], stop: StopFlag
) -> dict[str, int]:
    """The highest version on ``topic`` of each of ``names`` that has one.

    Versions only go up, so the newest records of a name hold its highest version.
    A version beyond the contract's `MAX_VERSION` (no reader takes it) is ignored.
    """
    keys = {name.encode(): name for name in names}
    versions: dict[str, int] = {}
    with Table(driver, topic, topic_wait_s=TOPIC_WAIT_S, stop=stop) as table:
        for partition in table.partition_ids():
            found = table.read_back(partition, lambda rs: keys.keys() <= {r.key for r in rs})
            for record in found:
                name = keys.get(record.key) if record.key is not None else None
                version = _version(record.value) if name is not None else None
                if name is None or version is None:
                    continue
                if version > MAX_VERSION:
                    log.warning(
                        "model %r: version %d on %s is beyond the contract's %d: ignored",
                        name,
                        version,
                        topic,
                        MAX_VERSION,
                    )
                    continue
                versions[name] = max(versions.get(name, 0), version)
    return versions


def _version(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        version = json.loads(value).get("version")
    except (ValueError, AttributeError, RecursionError):
        return None
    return version if type(version) is int else None


@dataclass
class Positions:
    """Where the input partitions end, and the group's committed offsets on them."""

    partitions: list[int]
    ends: dict[int, int] = field(default_factory=dict)
    committed: dict[int, int | None] = field(default_factory=dict)


@dataclass
class Start:
    """Everything the trainer reads back at start."""

    found: Found
    versions: dict[str, int]
    positions: Positions


def read_start(
    driver: Driver,
    topics: Topics,
    group: str,
    *,
    names: Collection[str],
    partitions: Sequence[int],
    stop: StopFlag,
) -> Start:
    """The checkpoint, the versions of ``names`` (and the checkpoint's), the input's positions."""
    found = read_checkpoint(driver, topics.trainer_state, group, stop)
    if found.checkpoint is not None:
        names = {*names, *found.checkpoint.versions}
    versions = read_versions(driver, topics.models, names, stop)
    positions = read_positions(driver, topics.points, group, partitions, stop)
    return Start(found, versions, positions)


def read_positions(
    driver: Driver, topic: str, group: str, partitions: Sequence[int], stop: StopFlag
) -> Positions:
    """The end offsets of ``partitions`` of ``topic``, and ``group``'s committed offsets."""
    consumer = driver.consumer(group_id=group)
    try:
        if not partitions:
            partitions = wait_for_partitions(consumer, topic, TOPIC_WAIT_S, stop=stop)
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = consumer.end_offsets(tps)
        committed = consumer.committed(tps)
    finally:
        consumer.close()
    return Positions(
        list(partitions),
        {tp.partition: o for tp, o in ends.items()},
        {tp.partition: o for tp, o in committed.items()},
    )
