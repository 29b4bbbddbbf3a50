"""7. Gateway: requests/s and p50 / p99 of ``POST /predict`` with 16 and 64 clients.

The gateway runs as users run it (``streamscore gateway``: gunicorn, 4 gthread
workers) in front of a scorer (``streamscore scorer``) that answers over the bus,
without and then with a background flood of points (``streamscore producer``,
unthrottled) that the same scorer has to score meanwhile. Beside it, the same
requests go to the in-process baseline (`bench.baseline`: the model called in
the web process, same gunicorn set-up), which shows what the bus costs.

This run's ``requests`` and ``replies`` topics are created with ``LogAppendTime``,
so each round trip splits into the scorer's share (request appended -> reply
appended) and the gateway's (the rest).
"""

from __future__ import annotations

import http.client
import importlib.util
import logging
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.baseline import write_models
from bench.config import BenchConfig
from bench.context import BenchContext, assigned, end_offsets, stop_process
from bench.load import LoadResult, predict_bodies, run_load, wrk_load, wrk_missing
from bench.models import default_models, publish
from bench.report import BenchResult, Latency, ratio
from bus.reply import CORRELATION_ID, header
from bus.settings import KafkaSettings
from bus.topics import TopicLayout, Topics
from core.errors import StreamscoreError
from streamscore.broker import free_port

log = logging.getLogger(__name__)

CLIENTS = (16, 64)
WORKERS = 4
APPENDED = {"message.timestamp.type": "LogAppendTime", "retention.ms": "3600000"}
THREADS = 16


def answers(port: int, path: str, method: str = "GET", body: bytes | None = None) -> int:
    """The status of one request on a new connection (0 when nothing answers)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        status = connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()
    return status


def readiness(port: int, path: str, method: str = "GET", body: bytes | None = None) -> Counter[int]:
    """The statuses of 12 requests in a row, each on a new connection (so every worker)."""
    return Counter(answers(port, path, method, body) for _ in range(12))


def wait_ready(port: int, body: bytes, timeout_s: float) -> Counter[int]:
    """Wait until 12 ``POST /predict`` in a row answer 200; the last statuses seen.

    A worker that never gets ready shows up in these statuses (and in the load
    run's failures) instead of stopping the benchmark.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = readiness(port, "/predict", "POST", body)
        if statuses[200] == 12 or time.monotonic() >= deadline:
            return statuses
        time.sleep(0.5)


def appended_at(settings: KafkaSettings, topic: str, since: dict[int, int]) -> dict[bytes, int]:
    """Correlation id -> log-append time of the records written to ``topic`` after ``since``."""
    out: dict[bytes, int] = {}
    with assigned(settings, topic) as (consumer, partitions):
        ends = consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, since.get(tp.partition, 0))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            consumer.position(tp) < end for tp, end in ends.items()
        ):
            for records in consumer.poll(timeout_ms=300).values():
                for record in records:
                    correlation = header(record, CORRELATION_ID)
                    if correlation is not None:
                        out[correlation] = record.timestamp
    return out


def scorer_share(
    settings: KafkaSettings, topics: Topics, since: dict[str, dict[int, int]]
) -> Latency:
    """From each request's append to its reply's append: the scorer's part of a round trip.

    The gateway's ``requests`` and ``replies`` topics of this run are created with
    ``LogAppendTime``; the rest of a round trip is the gateway's (HTTP, producing
    the request, consuming the reply).
    """
    requests = appended_at(settings, topics.requests, since[topics.requests])
    replies = appended_at(settings, topics.replies, since[topics.replies])
    return Latency.of([float(replies[c] - t) for c, t in requests.items() if c in replies])


def _rows(result: BenchResult, case: str, load: LoadResult, note: str = "") -> None:
    latency = load.latency
    errors = sum(load.errors.values()) + sum(n for s, n in load.statuses.items() if s != 200)
    detail = f"{load.ok:,} answers" + (f", {errors} failed" if errors else "")
    result.add(case, "requests/s", load.rate, "req/s", target=">= 1000", note=note or detail)
    target = "<= 20" if case.startswith("gateway, 16 clients") else ""
    result.add(case, "p50", latency.p50, "ms")
    result.add(case, "p99", latency.p99, "ms", target=target)
    result.data[case] = {
        "rate": load.rate,
        "latency_ms": latency,
        "statuses": dict(load.statuses),
        "errors": dict(load.errors),
        "seconds": load.seconds,
    }


KAFKA_CLIENTS = ("kafka-python", "confluent")
WRK_BODY = b'{"x": [0.5, -0.25, 1.0]}'
#: An unrecorded wrk run before a stack's measured ones, every stack alike: connections
#: open, the clients' first metadata and fetches done.
WARMUP_S = 2.0


def _warm_up(port: int) -> None:
    wrk_load("127.0.0.1", port, "/predict", WRK_BODY, connections=CLIENTS[0], seconds=WARMUP_S)


def _wrk_rows(result: BenchResult, case: str, port: int, clients: int, seconds: float) -> None:
    """One wrk run of ``POST /predict`` (the figures people compare designs with)."""
    rate, p50, p99, failed = wrk_load(
        "127.0.0.1", port, "/predict", WRK_BODY, connections=clients, seconds=seconds
    )
    note = "wrk" + (f", {failed} non-2xx" if failed else "")
    result.add(case, "wrk requests/s", rate, "req/s", note=note)
    result.add(case, "wrk p50", p50, "ms")
    result.add(case, "wrk p99", p99, "ms")
    result.data.setdefault(case, {})["wrk"] = {"rate": rate, "p50": p50, "p99": p99}


def celery_peer(
    ctx: BenchContext, config: BenchConfig, models_path: Any, result: BenchResult
) -> None:
    """Falcon + gunicorn -> Celery on Redis -> a Celery worker: the same prediction, wrk-loaded."""
    import shutil

    missing = wrk_missing() or (
        None
        if shutil.which("redis-server")
        else "redis-server is not installed (apt-get install -y redis-server)"
    )
    if importlib.util.find_spec("celery") is None:
        missing = missing or "celery is not installed (pip install 'streamscore[bench]')"
    if missing:
        print(f"gateway bench: Celery peer skipped: {missing}")
        return
    redis_port, port = free_port(), free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    env = {**ctx.env, "BENCH_BASELINE_MODELS": str(models_path),
           "BENCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}  # fmt: skip
    worker = ctx.spawn(
        "celery-worker",
        ["-m", "celery", "-A", "bench.peers.celery_predict", "worker", "-l", "WARNING",
         "-P", "threads", "-c", str(THREADS)],
        env,
    )  # fmt: skip
    web = ctx.spawn(
        "celery-web",
        ["-m", "gunicorn", "-w", str(WORKERS), "-k", "gthread", "--threads", str(THREADS),
         "--keep-alive", "5", "-b", f"127.0.0.1:{port}", "bench.peers.celery_predict:get_app()"],
        env,
    )  # fmt: skip
    try:
        if wait_ready(port, WRK_BODY, 60)[200] < 12:
            raise StreamscoreError("the Celery peer did not answer")
        _warm_up(port)
        for clients in CLIENTS:
            _wrk_rows(
                result, f"celery peer, {clients} clients", port, clients, config.gateway_seconds
            )
    finally:
        stop_process(web)
        stop_process(worker)
        redis.terminate()
        redis.wait(10)


def _load(port: int, clients: int, config: BenchConfig) -> LoadResult:
    return run_load(
        "127.0.0.1",
        port,
        "/predict",
        predict_bodies(),
        clients=clients,
        seconds=config.gateway_seconds,
        max_requests=config.gateway_max_requests,
    )


def run(ctx: BenchContext, config: BenchConfig) -> BenchResult:
    """The gateway with and without a flood, then the in-process baseline."""
    result = BenchResult("7. gateway")
    layout = TopicLayout.from_env(ctx.env)
    for name, partitions in (("requests", layout.partitions), ("replies", layout.reply_partitions)):
        ctx.create_topic(ctx.prefix("gateway") + name, partitions, APPENDED)
    topics = ctx.topics("gateway")
    models = default_models()
    publish(ctx.settings, topics.models, models)
    group = f"bench-{ctx.run_id}-gateway"
    body = predict_bodies(1)[0]
    _over_the_bus(ctx, config, result, topics, group=group, body=body)
    missing = wrk_missing()
    if missing:
        print(f"gateway bench: wrk runs skipped: {missing}")
    else:
        for kafka_client in KAFKA_CLIENTS:
            _wrk_over_the_bus(
                ctx, config, result, topics, group=f"{group}-{kafka_client}",
                kafka_client=kafka_client,
            )  # fmt: skip
    path = write_models(ctx.home / "baseline-models.jsonl", models)
    _baseline(ctx, config, result, path, body)
    celery_peer(ctx, config, path, result)
    for clients in CLIENTS:
        gateway = result.data[f"gateway, {clients} clients"]["rate"]
        local = result.data[f"in-process baseline, {clients} clients"]["rate"]
        result.add(f"{clients} clients", "gateway / baseline", ratio(gateway, local), "x",
                   note="requests/s over the bus as a share of in-process")  # fmt: skip
    return result


def _over_the_bus(
    ctx: BenchContext, config: BenchConfig, result: BenchResult, topics: Topics, *,
    group: str, body: bytes,
) -> None:  # fmt: skip
    """The gateway and its scorer, loaded without and then with a flood of points."""
    port = free_port()
    services = ctx.supervisor(
        "gateway",
        topics,
        STREAMSCORE_SCORER_GROUP=group,
        STREAMSCORE_SCORER_REQUESTS_GROUP=group + "-requests",
        STREAMSCORE_GATEWAY_BIND=f"127.0.0.1:{port}",
        STREAMSCORE_GATEWAY_WORKERS=str(WORKERS),
        STREAMSCORE_GATEWAY_THREADS=str(THREADS),
        STREAMSCORE_LOG_LEVEL="WARNING",
    )
    services.start("scorer", ["scorer"])
    services.start("gateway", ["gateway"])
    statuses = wait_ready(port, body, 60)
    result.data["readiness"] = dict(statuses)
    if not statuses[200]:
        raise StreamscoreError(f"the gateway never answered /predict; see {services.log_dir}")
    if statuses[200] < 12:
        result.add("gateway", "ready after 60 s", statuses[200] / 12, "x", note=(
            f"statuses of 12 requests: {dict(statuses)} (0: no answer in 5 s); "
            f"see {services.log_dir}"))  # fmt: skip
    _load_rows(ctx, config, result, topics, port=port, suffix="")
    before = sum(end_offsets(ctx.settings, topics.points).values())
    flood_started = time.monotonic()
    services.start("producer", ["producer"], STREAMSCORE_PRODUCER_FEATURES="3")
    time.sleep(3)  # the flood is on
    _load_rows(ctx, config, result, topics, port=port, suffix=", points flood")
    services.stop("producer")
    flooded = sum(end_offsets(ctx.settings, topics.points).values()) - before
    rate = ratio(flooded, time.monotonic() - flood_started)
    result.add("points flood", "points/s", rate, "pts/s", note="offered by the producer")
    services.stop_all(["gateway", "scorer"])


def _load_rows(
    ctx: BenchContext, config: BenchConfig, result: BenchResult, topics: Topics, *,
    port: int, suffix: str,
) -> None:  # fmt: skip
    """One load run per number of clients, with the scorer's share of each round trip."""
    for clients in CLIENTS:
        case = f"gateway, {clients} clients{suffix}"
        since = {t: end_offsets(ctx.settings, t) for t in (topics.requests, topics.replies)}
        _rows(result, case, _load(port, clients, config))
        share = scorer_share(ctx.settings, topics, since)
        result.add(case, "p99 request -> reply appended", share.p99, "ms",
                   note=f"p50 {share.p50:.0f} ms (the scorer's share)")  # fmt: skip
        result.data[case]["scorer_share_ms"] = share


def _wrk_over_the_bus(
    ctx: BenchContext, config: BenchConfig, result: BenchResult, topics: Topics, *,
    group: str, kafka_client: str,
) -> None:  # fmt: skip
    """The gateway and its scorer on one Kafka client library, loaded by wrk."""
    port = free_port()
    both = ctx.supervisor(
        f"gateway-{kafka_client}",
        topics,
        STREAMSCORE_KAFKA_CLIENT=kafka_client,
        STREAMSCORE_SCORER_GROUP=group,
        STREAMSCORE_SCORER_REQUESTS_GROUP=f"{group}-requests",
        STREAMSCORE_GATEWAY_BIND=f"127.0.0.1:{port}",
        STREAMSCORE_GATEWAY_WORKERS=str(WORKERS),
        STREAMSCORE_GATEWAY_THREADS=str(THREADS),
        STREAMSCORE_LOG_LEVEL="WARNING",
    )
    both.start("scorer", ["scorer"])
    both.start("gateway", ["gateway"])
    if wait_ready(port, WRK_BODY, 60)[200] == 12:
        _warm_up(port)
        for clients in CLIENTS:
            case = f"gateway ({kafka_client}), {clients} clients"
            _wrk_rows(result, case, port, clients, config.gateway_seconds)
    both.stop_all(["gateway", "scorer"])


def _baseline(
    ctx: BenchContext, config: BenchConfig, result: BenchResult, models_path: Path, body: bytes
) -> None:
    """The same requests to the in-process baseline (the model called in the web process)."""
    port = free_port()
    baseline = ctx.spawn(
        "baseline",
        ["-m", "gunicorn", "-w", str(WORKERS), "-k", "gthread", "--threads", str(THREADS),
         "--keep-alive", "5", "-b", f"127.0.0.1:{port}", "bench.baseline:get_app()"],
        {**ctx.env, "BENCH_BASELINE_MODELS": str(models_path)},
    )  # fmt: skip
    try:
        if wait_ready(port, body, 60)[200] < 12:
            raise StreamscoreError("the in-process baseline did not answer")
        for clients in CLIENTS:
            _rows(result, f"in-process baseline, {clients} clients", _load(port, clients, config))
    finally:
        stop_process(baseline)
