"""5. End-to-end latency: from a point's ``ts`` to its prediction's log-append time, per client.

For each Kafka client (``STREAMSCORE_KAFKA_CLIENT``, the same for both services)
the scorer (at-least-once, defaults) and the producer run as users run them:
``streamscore scorer`` and ``streamscore producer --rate R`` (which stamps each
point's ``ts`` with its send time). The predictions topic is created with
``message.timestamp.type=LogAppendTime``, so a prediction's record timestamp is
when the broker appended it; its ``ts`` field echoes the point's. This run's
``points`` topic is created with ``LogAppendTime`` too (the scorer reads a point's
record timestamp only when the point has no ``ts``), which splits each latency
into producer -> broker and broker -> prediction (the scorer's share). Both topics
are read after each run, so reading them takes nothing from the run. Each client
gets topics of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bench.config import BenchConfig
from bench.context import BenchContext, assigned, wait_until
from bench.data import point_values
from bench.models import default_models, publish
from bench.report import BenchResult, Latency, steady_rate
from bus.clients import make_producer
from bus.messages import Point, Prediction
from bus.settings import KafkaSettings
from bus.topics import HOUR_MS, TopicLayout, Topics
from core.errors import StreamscoreError
from streamscore.processes import Supervisor

log = logging.getLogger(__name__)

RATES = (1_000, 10_000)
WARM_UP = 200


def read_stamps(
    settings: KafkaSettings,
    topic: str,
    prefix: str,
    count: int,
    *,
    timeout_s: float,
    decode: Callable[[bytes], tuple[str, int]],
) -> dict[str, tuple[int, int]]:
    """id -> (its ``ts``, its record's timestamp) for the values whose id starts with ``prefix``.

    Reads ``topic`` from its start until ``count`` such values were seen; ``decode``
    gives a value's id and ``ts``.
    """
    out: dict[str, tuple[int, int]] = {}
    deadline = time.monotonic() + timeout_s
    with assigned(settings, topic) as (consumer, partitions):
        consumer.seek_to_beginning(*partitions)
        while len(out) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    ident, ts = decode(record.value)
                    if ident.startswith(prefix) and ident not in out:
                        out[ident] = (ts, record.timestamp)
    if len(out) < count:
        raise StreamscoreError(f"only {len(out)} of {count} values of {prefix!r} in {topic}")
    return out


def _prediction(value: bytes) -> tuple[str, int]:
    prediction = Prediction.from_bytes(value)
    return prediction.id, prediction.ts


def _point(value: bytes) -> tuple[str, int]:
    point = Point.from_bytes(value)
    return point.id, point.ts or 0


def run(ctx: BenchContext, config: BenchConfig) -> BenchResult:
    """Each client in turn: offer each rate for ``latency_seconds``; p50 / p99 / max."""
    result = BenchResult("5. latency")
    for client in config.clients:
        run_client(ctx, config, client, result)
    return result


def run_client(ctx: BenchContext, config: BenchConfig, client: str, result: BenchResult) -> None:
    """The scorer and the producer on ``client``: the rows of each offered rate."""
    layout = TopicLayout.from_env(ctx.env)
    name = f"latency-{client}"
    ctx.create_topic(
        ctx.prefix(name) + "points",
        layout.partitions,
        {"retention.ms": str(HOUR_MS), "message.timestamp.type": "LogAppendTime"},
    )
    topics = ctx.topics(name)
    publish(ctx.settings, topics.models, default_models())
    group = f"bench-{ctx.run_id}-{name}"
    services = ctx.supervisor(
        name,
        topics,
        STREAMSCORE_KAFKA_CLIENT=client,
        STREAMSCORE_SCORER_GROUP=group,
        STREAMSCORE_SCORER_REQUESTS_GROUP=group + "-requests",
    )
    services.start("scorer", ["scorer"])
    _warm_up(ctx, config, topics)
    for rate in RATES:
        _at_rate(ctx, config, services, topics, client=client, rate=rate, result=result)
    services.stop_all(["scorer"])


def _warm_up(ctx: BenchContext, config: BenchConfig, topics: Topics) -> None:
    """Wait until the scorer has joined its group and predicts, before the clock starts."""
    producer = make_producer(ctx.settings)
    for value in point_values(WARM_UP, seed=7):
        producer.send(topics.points, value=value.replace(b'"p-', b'"warm-'))
    producer.flush()
    producer.close()
    read_stamps(
        ctx.settings,
        topics.predictions,
        "warm-",
        WARM_UP,
        timeout_s=config.timeout_s,
        decode=_prediction,
    )


def _at_rate(
    ctx: BenchContext, config: BenchConfig, services: Supervisor, topics: Topics, *,
    client: str, rate: int, result: BenchResult,
) -> None:  # fmt: skip
    """A producer run at ``rate`` points/s, and the latencies of its points."""
    count = int(rate * config.latency_seconds)
    prefix = f"r{rate}-"
    services.start(
        f"producer-{rate}",
        ["producer"],
        STREAMSCORE_PRODUCER_RATE=str(rate),
        STREAMSCORE_PRODUCER_COUNT=str(count),
        STREAMSCORE_PRODUCER_ID_PREFIX=prefix,
        STREAMSCORE_PRODUCER_FEATURES="3",
        STREAMSCORE_PRODUCER_PROGRESS_INTERVAL="3600",
    )
    finished = wait_until(
        lambda: services.pid(f"producer-{rate}") is None, config.latency_seconds * 3 + 30
    )
    if not finished:
        raise StreamscoreError(f"the producer at {rate}/s on {client} did not finish")
    predictions = read_stamps(
        ctx.settings, topics.predictions, prefix, count, timeout_s=60, decode=_prediction
    )
    points = read_stamps(ctx.settings, topics.points, prefix, count, timeout_s=60, decode=_point)
    total = Latency.of([float(done - ts) for ts, done in predictions.values()])
    producer = Latency.of([float(appended - ts) for ts, appended in points.values()])
    scorer = Latency.of([float(done - points[i][1]) for i, (_, done) in predictions.items()])
    offered = steady_rate([float(ts) for ts, _ in predictions.values()])
    case = f"{client}, {rate:,} pts/s offered"
    target = "<= 50" if rate == 1_000 else ""
    note = f"{total.count:,} points, {offered:,.0f} pts/s achieved"
    result.add(case, "p50", total.p50, "ms")
    result.add(case, "p99", total.p99, "ms", target=target, note=note)
    result.add(case, "max", total.max, "ms")
    result.add(case, "p99 producer -> broker", producer.p99, "ms",
               note=f"p50 {producer.p50:.0f} ms (the producer's linger and send)")  # fmt: skip
    result.add(case, "p99 broker -> prediction", scorer.p99, "ms",
               note=f"p50 {scorer.p50:.0f} ms (the scorer's share)")  # fmt: skip
    result.data[f"{client}, {rate}"] = {
        "latency_ms": total,
        "producer_to_broker_ms": producer,
        "broker_to_prediction_ms": scorer,
        "offered": offered,
        "count": count,
    }
