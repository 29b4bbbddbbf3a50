"""6. Trainer: labelled points/s ingested from Kafka, and its memory after 1 and 10 million points.

The Kafka path: ``streamscore trainer`` (default settings: multivariate and cubic
polynomial, cumulative, publishing every 1,000 points) reads the run's pre-filled
``points`` topic (every point labelled) from the start, with its own group and
its own ``models`` and checkpoint topics; its rate is taken from its committed
offsets (committed with each publication) and its memory (RSS) when it is done.
Ten million points do not fit through Kafka in the time budget: `bench.trainer_memory`
feeds the trainer's own batch-ingest path in-process instead, and reads its
memory after 1 and after 10 million points; the table says which is which.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass

from bench.config import BenchConfig
from bench.context import BenchContext, process_tree, tree_rss_bytes
from bench.data import dataset
from bench.pipes import measure_pipe
from bench.report import BenchResult, ratio
from bus.topics import Topics, ensure_topics
from streamscore.broker import PROJECT_ROOT
from streamscore.errors import StreamscoreError

log = logging.getLogger(__name__)

MIB = 1024 * 1024


def run(ctx: BenchContext, config: BenchConfig) -> BenchResult:
    """The trainer on the pre-filled topic, then the in-process memory run."""
    result = BenchResult("6. trainer")
    data = dataset(ctx, config.points)
    prefix = data.topics.points[: -len("points")]
    own = {name: f"{prefix}trainer-{name}" for name in ("models", "trainer_state", "deadletter")}
    topics = Topics.with_prefix(prefix, **own)
    ensure_topics(ctx.settings, topics)
    ctx.track(*own.values())
    group = f"bench-{ctx.run_id}-trainer"
    services = ctx.supervisor(
        "trainer",
        data.topics,
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
    case = f"Kafka, {data.count:,} points"
    result.add(case, "labelled points/s", run.wall_rate, "pts/s", target=">= 200000")
    result.add(
        case, "CPU per point", run.cpu_us_per_record, "µs", note=f"{run.cpu_share:.2f} cores busy"
    )
    result.add(
        case,
        "memory (RSS) at the end",
        None if rss is None else rss / MIB,
        "MiB",
        note=f"with its {workers} worker processes" if workers else "",
    )
    result.data["kafka"] = {"run": run, "rss_bytes": rss, "workers": workers}

    memory = in_process(config.trainer_memory_points)
    checkpoints = dict(memory.rss)
    first, last = checkpoints.get(1_000_000), checkpoints.get(memory.points)
    case = "in-process batch path (no Kafka)"
    result.add(case, "labelled points/s", memory.rate, "pts/s")
    result.add(case, "RSS after 1M points", first / MIB if first else None, "MiB")
    if memory.points != 1_000_000:
        result.add(
            case,
            f"RSS after {memory.points / 1e6:.0f}M points",
            last / MIB if last else None,
            "MiB",
        )
    growth = (last - first) / MIB if first and last else None
    result.add(
        case,
        "growth from 1M to the end",
        growth,
        "MiB",
        target="<= 5",
        note="memory flat" if growth is not None and growth <= 5 else "",
    )
    result.data["in_process"] = memory
    result.data["growth_ratio"] = ratio(last or 0, first or 0)
    return result


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
