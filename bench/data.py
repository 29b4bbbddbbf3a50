"""The benchmarks' input: contract ``points`` values, pre-encoded, and a fast way to load them.

Values are made once, as bytes, exactly as ``streamscore producer`` would write
them (compact JSON, ``repr`` floats, a ``ts``), so that generating them costs
nothing inside a measurement. `fill` loads a topic with several producer
processes at once (acks=1, big batches, explicit partitions): it is set-up, not a
measurement of the project's producer, and says so in the table.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from dataclasses import dataclass

import numpy as np

from bench.context import BenchContext
from bus.clients import make_producer
from bus.settings import KafkaSettings
from bus.topics import TopicLayout, Topics

log = logging.getLogger(__name__)

#: The true relation of the generated data (3 features): y = w . x + b + noise.
WEIGHTS = (2.0, -1.0, 0.5)
BIAS = 0.5
NOISE = 0.1
#: Records sent to one partition before moving to the next (one producer batch).
CHUNK = 2000

FILL_OVERRIDES = {
    "acks": 1,
    "enable_idempotence": False,
    "linger_ms": 50,
    "batch_size": 1024 * 1024,
    "max_request_size": 8 * 1024 * 1024,
    "metrics_enabled": False,
}


def point_values(
    count: int, *, start: int = 0, seed: int = 0, ts: int | None = None, features: int = 3
) -> list[bytes]:
    """``count`` labelled points ``p-<start+i>`` as ``points`` values (compact JSON bytes)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (count, features))
    weights = np.resize(np.asarray(WEIGHTS), features)
    y = x @ weights + BIAS + rng.normal(0.0, NOISE, count)
    stamp = int(time.time() * 1000) if ts is None else ts
    rows = x.tolist()
    labels = y.tolist()
    return [
        f'{{"id":"p-{start + i}","x":[{",".join(map(repr, row))}],"y":{y!r},"ts":{stamp}}}'.encode()
        for i, (row, y) in enumerate(zip(rows, labels, strict=True))
    ]


@dataclass(frozen=True)
class FillResult:
    """How many records were written, how many bytes, and how long it took."""

    records: int
    value_bytes: int
    seconds: float
    processes: int


@dataclass(frozen=True)
class FillJob:
    """What one fill process writes: ``count`` points from ``p-<start>`` on, to ``partitions``."""

    settings: KafkaSettings
    topic: str
    partitions: list[int]
    count: int
    start: int
    seed: int


def _fill_part(job: FillJob) -> tuple[int, int]:
    """One fill process: make the values, send them a chunk per partition in turn."""
    values = point_values(job.count, start=job.start, seed=job.seed)
    producer = make_producer(job.settings, **FILL_OVERRIDES)
    send = producer.send
    n = len(job.partitions)
    for i, value in enumerate(values):
        send(job.topic, value=value, partition=job.partitions[(i // CHUNK) % n])
    producer.flush()
    producer.close()
    return len(values), sum(map(len, values))


def fill(
    settings: KafkaSettings, topic: str, count: int, partitions: int, processes: int = 2
) -> FillResult:
    """Write ``count`` points to ``topic`` (its partitions shared out between processes)."""
    processes = max(1, min(processes, partitions))
    shares = [list(range(partitions))[i::processes] for i in range(processes)]
    sizes = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
    starts = [sum(sizes[:i]) for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    began = time.perf_counter()
    jobs = [
        FillJob(settings, topic, shares[i], sizes[i], starts[i], seed=i) for i in range(processes)
    ]
    with context.Pool(processes) as pool:
        results = pool.map(_fill_part, jobs)
    seconds = time.perf_counter() - began
    return FillResult(sum(r[0] for r in results), sum(r[1] for r in results), seconds, processes)


@dataclass(frozen=True)
class Dataset:
    """A pre-filled ``points`` topic of the run (under the ``data<partitions>`` prefix)."""

    topics: Topics
    count: int
    partitions: int
    fill: FillResult

    @property
    def prefix(self) -> str:
        """The topic prefix its services are run with (``STREAMSCORE_TOPIC_PREFIX``)."""
        return self.topics.points[: -len("points")]


def dataset(ctx: BenchContext, count: int, partitions: int | None = None) -> Dataset:
    """The run's ``count`` points on ``partitions`` partitions, filled once and shared.

    ``partitions`` None: the topic layout's default (``STREAMSCORE_TOPIC_PARTITIONS``).
    """
    if partitions is None:
        partitions = TopicLayout.from_env(ctx.env).partitions
    key = f"points-{count}-{partitions}"
    if key not in ctx.shared:
        name = f"data{partitions}"
        ctx.create_topic(ctx.prefix(name) + "points", partitions, {})
        topics = ctx.topics(name)
        log.info("filling %s with %d points", topics.points, count)
        result = fill(ctx.settings, topics.points, count, partitions)
        ctx.shared[key] = Dataset(topics, count, partitions, result)
    data: Dataset = ctx.shared[key]
    return data
