"""Metrics and health on a real broker: one scrape of the gateway, the scorer's counts and lag."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus.clients import driver_for
from bus.clients.base import TopicPartition
from bus.messages import ModelVersion, Point
from bus.settings import KafkaSettings
from bus.topics import TopicLayout, Topics, ensure_topics
from core.shutdown import StopFlag
from core.telemetry import TelemetryConfig, serve
from scorer.config import ScorerConfig
from scorer.service import Scorer

BIN = Path(sys.executable).parent
WORKERS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


# --- the gateway: one scrape counts every worker --------------------------------------------


def test_one_scrape_of_a_4_worker_gateway_counts_every_request(
    kafka_settings: KafkaSettings, fresh_topics: Topics, tmp_path: Path
) -> None:
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "STREAMSCORE_TOPIC_PREFIX": fresh_topics.points.removesuffix("points"),
        "STREAMSCORE_GATEWAY_BIND": f"127.0.0.1:{port}",
        "STREAMSCORE_GATEWAY_WORKERS": str(WORKERS),
        "STREAMSCORE_GATEWAY_THREADS": "4",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "streamscore"), "gateway"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("the gateway", lambda: get(base + "/v2/health/live")[0] == 200)
        time.sleep(2.0)  # every worker booted
        n = 400
        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(lambda _: get(base + "/ping")[0], range(n)))
        assert statuses.count(200) == n
        status, text = get(base + "/metrics")
        assert status == 200
        ping = [
            value
            for labels, value in samples(text, "streamscore_gateway_requests_total")
            if labels["route"] == "/ping"
        ]
        assert ping == [n], ping  # one series, every worker's requests in it
        counted = sum(
            value
            for labels, value in samples(text, "streamscore_gateway_request_duration_seconds_count")
            if labels["route"] == "/ping"
        )
        assert counted == n
        writers = {p.name for p in metrics_dir.glob("counter_*.db")}
        assert len(writers) >= 2, f"the requests should have spread over workers: {writers}"
        assert samples(text, "streamscore_build_info")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


# --- the scorer: counters, lag, endpoints ---------------------------------------------------


def test_scorer_counts_predictions_written_and_reports_the_groups_lag(
    kafka_settings: KafkaSettings, fresh_topics: Topics, unique_name: Callable[[str], str]
) -> None:
    topics = fresh_topics
    ensure_topics(kafka_settings, topics, TopicLayout(partitions=3, reply_partitions=4))
    driver = driver_for(kafka_settings)
    group = unique_name("scorer")
    config = replace(
        ScorerConfig(),
        group_id=group,
        requests_group_id=group + "-requests",
        transactional_id=group,
        scores_interval_s=0.5,
    )
    producer = driver.producer()
    regressor = {"kind": "multivariate", "n_features": 2, "intercept": 0.5, "coef": [2.0, -1.0]}
    version = ModelVersion(
        name="lin",
        version=1,
        kind="multivariate",
        n_features=2,
        params=regressor,
        trained_on={"count": 10},
        train_score={"r2": 1.0, "rmse": 0.0, "mae": 0.0},
        created_at=0,
    )
    producer.send(topics.models, version.to_bytes(), key=b"lin")
    rng = np.random.default_rng(7)

    def send_points(n: int, start: int) -> None:
        for i in range(start, start + n):
            point = Point(f"p{i}", rng.uniform(-1, 1, 2).tolist(), float(i))
            producer.send(topics.points, point.to_bytes(), key=f"k{i}".encode())
        producer.flush()

    send_points(90, 0)
    stop = StopFlag()
    scorer = Scorer(driver, topics, config, stop=stop, retry_s=30.0)
    telemetry = scorer.telemetry(TelemetryConfig("scorer", port=free_port(), stall_s=60))
    server = serve(TelemetryConfig("scorer", port=0), telemetry.registry, telemetry.health)
    assert server is None  # port 0: off
    server = serve(
        TelemetryConfig("scorer", port=free_port()), telemetry.registry, telemetry.health
    )
    assert server is not None
    base = f"http://127.0.0.1:{server.port}"
    thread = threading.Thread(target=scorer.run, daemon=True)
    thread.start()
    try:
        wait_for("90 predictions", lambda: scorer.stats.predictions == 90)
        telemetry.watch.poll()
        assert get(base + "/health/live")[0] == 200
        status, body = get(base + "/health/ready")
        assert status == 200, body
    finally:
        stop.set()
        thread.join(timeout=30)
    status, text = get(base + "/metrics")
    (predicted,) = [v for _, v in samples(text, "streamscore_predictions_total")]
    assert predicted == count_records(driver, topics.predictions) == 90

    send_points(40, 90)  # nobody reads them: the group's lag
    telemetry.watch.poll()
    status, text = get(base + "/metrics")
    reported = {
        (labels["topic"], int(labels["partition"])): value
        for labels, value in samples(text, "streamscore_consumer_lag")
        if labels["group"] == group
    }
    assert reported == admin_lag(kafka_settings, group, topics.points)
    assert sum(reported.values()) == 40
    server.close()
    telemetry.watch.close()
    producer.close()


def count_records(driver: object, topic: str) -> int:
    """Records in ``topic`` (read committed), read to the end."""
    consumer = driver.consumer(group_id=None)  # type: ignore[attr-defined]
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for(topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(tps)
        ends = consumer.end_offsets(tps)
        seen = 0
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, "could not read the topic to its end"
            seen += len(consumer.poll(0.5))
        return seen
    finally:
        consumer.close()


def admin_lag(settings: KafkaSettings, group: str, topic: str) -> dict[tuple[str, int], float]:
    """The group's lag per partition as Kafka's admin client and watermarks give it."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    admin_module = pytest.importorskip("confluent_kafka.admin")
    admin = admin_module.AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    request = confluent_kafka.ConsumerGroupTopicPartitions(group)
    future = admin.list_consumer_group_offsets([request])[group]
    committed = {(tp.topic, tp.partition): tp.offset for tp in future.result().topic_partitions}
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": settings.bootstrap_servers, "group.id": group + "-probe"}
    )
    try:
        lag = {}
        for (t, p), offset in committed.items():
            if t != topic:
                continue
            _, high = consumer.get_watermark_offsets(
                confluent_kafka.TopicPartition(t, p), timeout=10
            )
            lag[(t, p)] = float(high - max(offset, 0))
        return lag
    finally:
        consumer.close()
