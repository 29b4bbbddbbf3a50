"""8. Hot swap: from a model version's publication to the first prediction that uses it.

A scorer (``streamscore scorer``) scores a steady stream of points
(``streamscore producer --rate 2000``) while new versions of its one model are
published to ``models``, one every ``SPACING_S`` seconds. A version's publication
time is its ``models`` record's timestamp (set when it was sent); the first
prediction that uses it is the earliest log-append time among the predictions
carrying its version number.
"""

from __future__ import annotations

import logging
import time

from bench.config import BenchConfig
from bench.context import BenchContext, assigned
from bench.models import model_version, publish
from bench.report import BenchResult, Latency
from bus.messages import Prediction
from bus.settings import KafkaSettings
from core.errors import StreamscoreError

log = logging.getLogger(__name__)

RATE = 2_000
SPACING_S = 1.5


def first_uses(settings: KafkaSettings, topic: str, versions: set[int]) -> dict[int, int]:
    """Version -> the earliest append time of a prediction made with it (read from the start)."""
    first: dict[int, int] = {}
    with assigned(settings, topic) as (consumer, partitions):
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    version = Prediction.from_bytes(record.value).version
                    if version in versions:
                        first[version] = min(first.get(version, record.timestamp), record.timestamp)
            if all(consumer.position(tp) >= end for tp, end in ends.items()):
                break
    return first


def wait_for_version(settings: KafkaSettings, topic: str, version: int, timeout_s: float) -> None:
    """Wait until a prediction made with ``version`` shows up."""
    with assigned(settings, topic) as (consumer, _partitions):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                if any(Prediction.from_bytes(r.value).version == version for r in records):
                    return
    raise StreamscoreError(f"no prediction of version {version} within {timeout_s:.0f}s")


def run(ctx: BenchContext, config: BenchConfig) -> BenchResult:
    """Publish ``swaps`` versions while points flow; the swap time of each."""
    result = BenchResult("8. hot swap")
    topics = ctx.topics("hotswap")
    publish(ctx.settings, topics.models, [model_version("multivariate", 1, "multivariate")])
    group = f"bench-{ctx.run_id}-hotswap"
    services = ctx.supervisor(
        "hotswap",
        topics,
        STREAMSCORE_SCORER_GROUP=group,
        STREAMSCORE_SCORER_REQUESTS_GROUP=group + "-requests",
    )
    services.start("scorer", ["scorer"])
    services.start(
        "producer",
        ["producer"],
        STREAMSCORE_PRODUCER_RATE=str(RATE),
        STREAMSCORE_PRODUCER_FEATURES="3",
        STREAMSCORE_PRODUCER_PROGRESS_INTERVAL="3600",
    )
    wait_for_version(ctx.settings, topics.predictions, 1, config.timeout_s)
    published: dict[int, int] = {}
    for version in range(2, config.swaps + 2):
        time.sleep(SPACING_S)
        slope = 1.0 + version / 10  # each version predicts differently
        message = model_version("multivariate", version, "multivariate", slope)
        published[version] = publish(ctx.settings, topics.models, [message])[0]
    time.sleep(SPACING_S)
    services.stop_all(["producer", "scorer"])
    first = first_uses(ctx.settings, topics.predictions, set(published))
    missing = sorted(set(published) - set(first))
    if missing:
        raise StreamscoreError(f"versions {missing} were never used by a prediction")
    swaps = [float(first[v] - published[v]) for v in sorted(published)]
    summary = Latency.of(swaps)
    case = f"{len(swaps)} versions, {RATE:,} pts/s flowing"
    result.add(case, "median", summary.p50, "ms")
    result.add(
        case, "max", summary.max, "ms", target="<= 500", note=", ".join(f"{s:.0f}" for s in swaps)
    )
    result.data["swap_ms"] = swaps
    return result
