"""Measuring a consume-transform-produce process (pass-through, scorer, peer) on a full topic.

`measure_pipe` watches a process's output topic grow (or, for a process without
one, its group's committed offsets) and reads the process's CPU time at the first
output seen and when the last one is there, so start-up, group join and the wait
for the first fetch are left out, and so is anything after the last output (a
peer's commit timer, say). The rate comes from the broker's append times of the
first and last output records (every output topic here is ``LogAppendTime``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from bench.context import cpu_seconds, edge_timestamps
from bench.report import ratio, span_rate
from bus.clients import make_admin, make_consumer
from bus.settings import KafkaSettings
from core.errors import StreamscoreError

POLL_S = 0.2


@dataclass(frozen=True)
class PipeRun:
    """What one process did: records, its rate, and its CPU cost per record."""

    records: int
    rate: float  # records/s: output records over the span of their log-append times
    wall_rate: float  # records/s: progress over the bench's clock between the two marks
    cpu_us_per_record: float  # the process's CPU time (all threads, children) per record
    cpu_share: float  # cores the process kept busy meanwhile
    seconds: float  # between the two marks


@dataclass(frozen=True)
class Mark:
    """One look at a running process: the bench's clock, its CPU seconds, its progress."""

    wall: float
    cpu: float
    done: int


def between(first: Mark, last: Mark) -> tuple[float, float, float, float]:
    """(wall rate, CPU µs per record, cores busy, seconds) from ``first`` to ``last``."""
    seconds = last.wall - first.wall
    records = last.done - first.done
    cpu = last.cpu - first.cpu
    return ratio(records, seconds), ratio(cpu * 1e6, records), ratio(cpu, seconds), seconds


def committed(admin: KafkaAdminClient, group: str) -> int:
    """The sum of a group's committed offsets (0 before its first commit)."""
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    except KafkaError:
        return 0
    return sum(max(o.offset, 0) for o in offsets.values())


class OutputCount:
    """How many records a topic holds (the sum of its partitions' last stable offsets)."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self._consumer = make_consumer(settings, group_id=None)
        self._partitions = [
            TopicPartition(topic, p)
            for p in sorted(self._consumer.partitions_for_topic(topic) or ())
        ]
        if not self._partitions:
            self._consumer.close()
            raise StreamscoreError(f"topic {topic!r} has no partitions (does it exist?)")

    def __call__(self) -> int:
        """The count now (transaction markers count too: a few per transaction)."""
        return sum(self._consumer.end_offsets(self._partitions).values())

    def close(self) -> None:
        """Release the consumer."""
        self._consumer.close()


def measure_pipe(
    settings: KafkaSettings,
    *,
    pid: int,
    group: str,
    output: str | None,
    count: int,
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
) -> PipeRun:
    """Wait until the process wrote ``count`` outputs (or committed ``count`` offsets); measure.

    With an ``output`` topic, progress is its record count and the rate is taken
    from the append times of its first and last records; without, progress is the
    group's committed offsets and the rate is the wall rate between the marks.
    """
    deadline = time.monotonic() + timeout_s
    first: Mark | None = None
    done = 0
    admin = make_admin(settings)
    outputs = OutputCount(settings, output) if output is not None else None
    try:
        while time.monotonic() < deadline:
            done = outputs() if outputs is not None else committed(admin, group)
            mark = Mark(time.monotonic(), cpu_seconds(pid) or 0.0, done)
            if first is None and done > 0:
                first = mark
            if done >= count:
                break
            if not alive():
                raise StreamscoreError(f"the process (pid {pid}) exited after {done} records")
            time.sleep(POLL_S)
        else:
            raise StreamscoreError(f"only {done} of {count} records in {timeout_s:.0f}s")
    finally:
        admin.close()
        if outputs is not None:
            outputs.close()
    assert first is not None
    wall_rate, cpu_us, share, seconds = between(first, mark)
    if output is not None:
        first_ms, last_ms = edge_timestamps(settings, output)
        rate = span_rate(count, first_ms, last_ms)
    else:
        rate = wall_rate
    return PipeRun(
        records=done,
        rate=rate,
        wall_rate=wall_rate,
        cpu_us_per_record=cpu_us,
        cpu_share=share,
        seconds=seconds,
    )
