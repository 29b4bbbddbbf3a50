"""Measuring a consume-transform-produce process (pass-through, scorer) over a pre-filled topic."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from bench.context import cpu_seconds, edge_timestamps
from bench.report import ratio, span_rate
from bus.clients import make_admin
from bus.settings import KafkaSettings
from streamscore.errors import StreamscoreError

POLL_S = 0.2


@dataclass(frozen=True)
class PipeRun:
    """What one process did: records, its rate, and its CPU cost per record."""

    records: int
    rate: float  # records/s: output records over the span of their log-append times
    wall_rate: float  # records/s: committed offsets over the bench's clock
    cpu_us_per_record: float  # the process's CPU time (all threads) per record
    cpu_share: float  # cores the process kept busy meanwhile
    seconds: float


def committed(admin: KafkaAdminClient, group: str) -> int:
    """The sum of a group's committed offsets (0 before its first commit)."""
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    except KafkaError:
        return 0
    return sum(max(o.offset, 0) for o in offsets.values())


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
    """Wait until ``group`` has committed ``count`` records; measure from its first commit.

    The CPU time and the wall clock are read at the first commit seen and at the
    last, so the process's start-up and group join are left out. With an ``output``
    topic the rate is taken from the broker's append times of its first and last
    records; without, from the committed offsets over the bench's clock.
    """
    deadline = time.monotonic() + timeout_s
    first: tuple[float, float, int] | None = None  # (wall, cpu, committed)
    done = 0
    admin = make_admin(settings)
    try:
        while time.monotonic() < deadline:
            done = committed(admin, group)
            now, cpu = time.monotonic(), cpu_seconds(pid) or 0.0
            if first is None and done > 0:
                first = (now, cpu, done)
            if done >= count:
                break
            if not alive():
                raise StreamscoreError(f"the process (pid {pid}) exited after {done} records")
            time.sleep(POLL_S)
        else:
            raise StreamscoreError(f"only {done} of {count} records in {timeout_s:.0f}s")
    finally:
        admin.close()
    assert first is not None
    seconds = now - first[0]
    records = done - first[2]
    wall_rate = ratio(records, seconds)
    if output is not None:
        first_ms, last_ms = edge_timestamps(settings, output)
        rate = span_rate(count, first_ms, last_ms)
    else:
        rate = wall_rate
    return PipeRun(
        records=done,
        rate=rate,
        wall_rate=wall_rate,
        cpu_us_per_record=ratio((cpu - first[1]) * 1e6, records),
        cpu_share=ratio(cpu - first[1], seconds),
        seconds=seconds,
    )
