"""The producer on a real broker: the CLI as users run it, and the send loop called directly,
through each client driver."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from bus.clients import driver_for
from bus.clients.base import Record
from bus.messages import Point
from bus.settings import CLIENTS, KafkaSettings
from bus.topics import Topics
from producer.loop import entity_keys, key_partition, publish
from producer.sources import DummySource
from tests.integration.streams import ROOT, read_until, run_streamscore, service_env

DATA = Path(__file__).parent.parent / "data"


def count_at_least(n: int) -> Callable[[list[Record]], bool]:
    return lambda records: len(records) >= n


def read_points(
    settings: KafkaSettings, topic: str, n: int, linger_s: float = 1.0
) -> list[tuple[Record, Point]]:
    """Every record of ``topic`` once ``n`` are there (and ``linger_s`` more for extras)."""
    records = read_until(settings, topic, count_at_least(n), timeout_s=120)
    if linger_s:
        records = read_until(settings, topic, count_at_least(len(records) + 1), linger_s)
    return [(record, Point.from_bytes(record.value)) for record in records]


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``streamscore producer`` to the end and return what it printed."""
    return run_streamscore(env, "producer", *args, timeout=timeout)


def sent_in(stdout: str) -> int:
    match = re.search(r"^sent ([\d,]+) points", stdout, re.MULTILINE)
    assert match, stdout
    return int(match.group(1).replace(",", ""))


@pytest.mark.parametrize("client", CLIENTS)
def test_cli_publishes_n_contract_points(
    kafka_settings: KafkaSettings, unique_name: Callable[[str], str], client: str
) -> None:
    prefix = unique_name("prod") + "."
    topics = Topics.with_prefix(prefix)
    env = service_env(
        kafka_settings, None, STREAMSCORE_TOPIC_PREFIX=prefix, STREAMSCORE_KAFKA_CLIENT=client
    )
    n = 6000
    started_ms = int(time.time() * 1000)
    result = run_cli(
        env, "--count", str(n), "--unlabelled", "0.25", "--keys", "12", "--run-id", "r1"
    )
    assert result.returncode == 0, result.stderr
    assert sent_in(result.stdout) == n
    assert f"to '{topics.points}'" in result.stdout

    rows = read_points(kafka_settings, topics.points, n)
    assert len(rows) == n
    points = [point for _, point in rows]
    ids = {p.id for p in points}
    assert ids == {f"r1-p-{i:06d}" for i in range(n)}
    unlabelled = sum(p.y is None for p in points) / n
    assert abs(unlabelled - 0.25) < 0.03
    assert all(len(p.x) == 3 for p in points)
    now_ms = int(time.time() * 1000)
    assert all(p.ts is not None and started_ms <= p.ts <= now_ms for p in points)
    # the record's timestamp is the client's, taken as it queues the record: ts's moment
    assert all(abs(record.timestamp - (point.ts or 0)) <= 1000 for record, point in rows)
    assert {record.key for record, _ in rows} == {f"entity-{i}".encode() for i in range(12)}
    assert {record.partition for record, _ in rows} == {0, 1, 2}  # created with 3 partitions
    # each key on the partition Kafka's Java client gives it, whichever client sent it
    assert all(
        record.key is not None and record.partition == key_partition(record.key, 3)
        for record, _ in rows
    )
    summary = re.search(r"; ([\d,]+) labelled, ([\d,]+) unlabelled", result.stdout)
    assert summary and int(summary.group(2).replace(",", "")) == n - sum(
        p.y is not None for p in points
    )


def test_cli_replays_a_file_and_reports_bad_rows(
    kafka_settings: KafkaSettings, fresh_topics: Topics
) -> None:
    env = service_env(kafka_settings, fresh_topics)
    result = run_cli(env, "--file", str(DATA / "points_bad_rows.csv"))
    assert result.returncode == 0, result.stderr
    assert sent_in(result.stdout) == 4
    assert "skipped 5 bad row(s)" in result.stdout
    for line in (3, 5, 6, 9, 10):
        assert f"  line {line}: " in result.stdout
    assert "line 2:" not in result.stdout and "line 11:" not in result.stdout

    rows = read_points(kafka_settings, fresh_topics.points, 4)
    by_id = {point.id: (record, point) for record, point in rows}
    assert sorted(by_id) == ["a-1", "a-3", "a-6", "a-9"]
    assert by_id["a-1"][1].x == [0.5, 1.5] and by_id["a-1"][1].y == 2.0
    assert by_id["a-3"][1].y is None
    assert by_id["a-1"][0].key == b"k1" and by_id["a-6"][0].key is None


def test_cli_replays_json_lines(kafka_settings: KafkaSettings, fresh_topics: Topics) -> None:
    env = service_env(kafka_settings, fresh_topics)
    result = run_cli(env, "--file", str(DATA / "points_bad_rows.jsonl"), "--keep-ts")
    assert result.returncode == 0, result.stderr
    assert sent_in(result.stdout) == 3
    assert "skipped 6 bad row(s)" in result.stdout
    points = {p.id: p for _, p in read_points(kafka_settings, fresh_topics.points, 3)}
    assert sorted(points) == ["j-1", "j-3", "p-000002"]
    assert points["p-000002"].ts == 1_700_000_000_000  # kept with --keep-ts


def test_cli_rate_limit(kafka_settings: KafkaSettings, fresh_topics: Topics) -> None:
    env = service_env(kafka_settings, fresh_topics)
    result = run_cli(env, "--count", "3000", "--rate", "1000")
    assert result.returncode == 0, result.stderr
    elapsed = float(re.search(r" in ([\d.]+) s ", result.stdout).group(1))  # type: ignore[union-attr]
    assert 2.9 <= elapsed < 5.0, result.stdout
    rows = read_points(kafka_settings, fresh_topics.points, 3000, linger_s=0)
    stamps = sorted(point.ts or 0 for _, point in rows)
    assert 2900 <= stamps[-1] - stamps[0] <= 4500  # spread over ~3 s, not sent in a burst


def test_sigterm_flushes_prints_the_summary_and_exits_0(
    kafka_settings: KafkaSettings, fresh_topics: Topics
) -> None:
    env = service_env(kafka_settings, fresh_topics)
    process = subprocess.Popen(
        [sys.executable, "-m", "streamscore", "producer", "--rate", "2000"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        read_until(kafka_settings, fresh_topics.points, count_at_least(1000), 60)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "stopped on request" in out
    sent = sent_in(out)
    assert sent >= 1000
    assert len(read_points(kafka_settings, fresh_topics.points, sent)) == sent


def test_bad_settings_exit_2_with_a_message(kafka_settings: KafkaSettings) -> None:
    env = service_env(kafka_settings, None, STREAMSCORE_PRODUCER_UNLABELLED="2")
    result = run_cli(env, "--count", "1")
    assert result.returncode == 2
    assert "STREAMSCORE_PRODUCER_UNLABELLED" in result.stderr
    result = run_cli(service_env(kafka_settings, None), "--file", "/nonexistent.csv")
    assert result.returncode == 2
    assert "no such file" in result.stderr


@pytest.mark.parametrize("client", CLIENTS)
def test_loop_called_directly_with_a_driver_producer(
    kafka_settings: KafkaSettings, fresh_topics: Topics, client: str
) -> None:
    n = 20_000
    source = DummySource("cubic", 3, unlabelled=0.1, seed=4, id_prefix="direct-")
    producer = driver_for(replace(kafka_settings, client=client)).producer()
    try:
        summary = publish(source, producer, fresh_topics.points, count=n, keys=entity_keys(9))
    finally:
        producer.close()
    assert summary.sent == n and summary.failed == 0 and summary.error is None
    rows = read_points(kafka_settings, fresh_topics.points, n)
    assert len(rows) == n
    points = sorted((point for _, point in rows), key=lambda p: p.id)
    expected = [p for p, _ in zip(source, range(n), strict=False)]
    assert [(p.id, p.x, p.y) for p in points] == [(p.id, p.x, p.y) for p in expected]
    assert summary.labelled == sum(p.y is not None for p in points)
    # one key, one partition
    partitions: dict[bytes | None, set[int]] = {}
    for record, _ in rows:
        partitions.setdefault(record.key, set()).add(record.partition)
    assert len(partitions) == 9
    assert all(p == {key_partition(k or b"", 3)} for k, p in partitions.items())
