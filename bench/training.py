"""6. Trainer: labelled points/s ingested from Kafka on each client, and its memory over 10M points.

The Kafka path: ``streamscore trainer`` (default settings: multivariate and cubic
polynomial, cumulative, exactly-once, publishing every 1,000 points) on each Kafka
client (``STREAMSCORE_KAFKA_CLIENT``) reads one of the run's pre-filled ``points``
topics (every point labelled) from the start, with its own group and its own
``models`` and checkpoint topics. Its rate is read from what it published: each
version carries the labelled points its model was trained on (``trained_on.count``)
and when it was made (``created_at``), so the rate between its first and last
versions leaves start-up and the stop out. CPU per point is taken between its first
and last commits, and its memory (RSS, with its parsing workers) when it is done.
Ten million points do not fit through Kafka in the time budget:
`bench.trainer_memory` feeds the trainer's own batch-ingest path in-process
instead, and reads its memory after 1 and after 10 million points; the table says
which is which.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.config import BenchConfig
from bench.context import BenchContext, assigned, process_tree, tree_rss_bytes
from bench.data import dataset
from bench.pipes import measure_pipe
from bench.report import BenchResult, ratio
from bench.scoring import case
from bus.messages import ModelVersion
from bus.settings import KafkaSettings
from bus.topics import Topics, ensure_topics
from core.errors import MessageError, StreamscoreError
from streamscore.broker import PROJECT_ROOT

log = logging.getLogger(__name__)

MIB = 1024 * 1024
RATE_MODEL = "multivariate"


def versions(settings: KafkaSettings, topic: str, name: str) -> list[tuple[int, int]]:
    """(created_at ms, trained_on count) of every version of model ``name`` on ``topic``."""
    found: list[tuple[int, int]] = []
    with assigned(settings, topic) as (consumer, partitions):
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
            consumer.position(tp) < end for tp, end in ends.items()
        ):
            for records in consumer.poll(timeout_ms=300).values():
                for record in records:
                    try:
                        model = ModelVersion.from_bytes(record.value)
                    except MessageError:
                        continue
                    if model.name == name:
                        found.append((model.created_at, int(model.trained_on.get("count", 0))))
    return sorted(found)


def published_rate(history: list[tuple[int, int]]) -> float:
    """Points trained on per second between the first and the last version (nan if < 2)."""
    if len(history) < 2:
        return float("nan")
    (first_ms, first), (last_ms, last) = history[0], history[-1]
    return ratio(last - first, (last_ms - first_ms) / 1000)


def run(ctx: BenchContext, config: BenchConfig) -> BenchResult:
    """The trainer on each client and pre-filled topic, then the in-process memory run."""
    result = BenchResult("6. trainer")
    for partitions in config.partitions:
        for client in config.clients:
            run_kafka(ctx, config, result, client, partitions)
    run_memory(config, result)
    return result


def run_kafka(
    ctx: BenchContext, config: BenchConfig, result: BenchResult, client: str, partitions: int
) -> None:
    """``streamscore trainer`` on ``client`` over the pre-filled topic of ``partitions``."""
    data = dataset(ctx, config.points, partitions)
    name = f"trainer-{client}"
    own = {
        kind: f"{data.prefix}{name}-{kind}" for kind in ("models", "trainer_state", "deadletter")
    }
    topics = Topics.with_prefix(data.prefix, **own)
    ensure_topics(ctx.settings, topics)
    ctx.track(*own.values())
    group = f"bench-{ctx.run_id}-{partitions}-{name}"
    services = ctx.supervisor(
        f"{name}-{partitions}",
        data.topics,
        STREAMSCORE_KAFKA_CLIENT=client,
        STREAMSCORE_TOPIC_MODELS=topics.models,
        STREAMSCORE_TOPIC_TRAINER_STATE=topics.trainer_state,
        STREAMSCORE_TOPIC_DEADLETTER=topics.deadletter,
        STREAMSCORE_TRAINER_GROUP=group,
        STREAMSCORE_TRAINER_TRANSACTIONAL_ID=group,
    )
    pid = services.start("trainer", ["trainer"])
    try:
        run = measure_pipe(
            ctx.settings,
            pid=pid,
            group=group,
            output=None,
            count=data.count,
            timeout_s=config.timeout_s,
            alive=lambda: services.pid("trainer") is not None,
        )
        rss = tree_rss_bytes(pid)
        workers = len(process_tree(pid)) - 1
    finally:
        services.stop("trainer")
    history = versions(ctx.settings, topics.models, RATE_MODEL)
    rate = published_rate(history)
    where = case(client, partitions)
    result.add(
        where,
        "labelled points/s",
        rate,
        "pts/s",
        target=">= 200000",
        note=f"{len(history)} versions; {run.wall_rate:,.0f} pts/s by committed offsets",
    )
    result.add(
        where, "CPU per point", run.cpu_us_per_record, "µs", note=f"{run.cpu_share:.2f} cores busy"
    )
    result.add(
        where,
        "memory (RSS) at the end",
        None if rss is None else rss / MIB,
        "MiB",
        note=f"with its {workers} worker processes" if workers else "",
    )
    result.data[where] = {"run": run, "rate": rate, "rss_bytes": rss, "workers": workers}


def run_memory(config: BenchConfig, result: BenchResult) -> None:
    """The in-process batch path over ``trainer_memory_points``: RSS after 1M and at the end."""
    memory = in_process(config.trainer_memory_points)
    checkpoints = dict(memory.rss)
    first, last = checkpoints.get(1_000_000), checkpoints.get(memory.points)
    where = "in-process batch path (no Kafka)"
    result.add(where, "labelled points/s", memory.rate, "pts/s")
    result.add(where, "RSS after 1M points", first / MIB if first else None, "MiB")
    if memory.points != 1_000_000:
        result.add(
            where,
            f"RSS after {memory.points / 1e6:.0f}M points",
            last / MIB if last else None,
            "MiB",
        )
    growth = (last - first) / MIB if first and last else None
    result.add(
        where,
        "growth from 1M to the end",
        growth,
        "MiB",
        target="<= 5",
        note="memory flat" if growth is not None and growth <= 5 else "",
    )
    result.data["in_process"] = memory
    result.data["growth_ratio"] = ratio(last or 0, first or 0)


@dataclass(frozen=True)
class MemoryRun:
    """What `bench.trainer_memory` reported: points fed, rate, (points, RSS bytes) checkpoints."""

    points: int
    labelled: int
    seconds: float
    rate: float
    rss: list[tuple[int, int | None]]


def in_process(points: int) -> MemoryRun:
    """Run `bench.trainer_memory` in a fresh process; what it reported."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.trainer_memory", "--points", str(points)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if done.returncode != 0:
        raise StreamscoreError(f"bench.trainer_memory failed: {done.stderr[-2000:]}")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    answer["rss"] = [(int(n), size) for n, size in answer["rss"]]
    return MemoryRun(**answer)
