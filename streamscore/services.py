"""``streamscore up | down | status``: the services in the background, and how they are doing."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bus.clients import driver_for
from bus.clients.base import Consumer, Driver, TopicPartition
from bus.messages import ModelVersion, Prediction, Score
from bus.settings import KafkaSettings
from bus.table import Table
from bus.topics import TopicLayout, Topics, ensure_topics
from core.errors import BusError, MessageError, StreamscoreError
from core.logs import configure_logging
from gateway.config import GatewayConfig
from monitor.config import MonitorConfig
from scorer.config import ScorerConfig
from streamscore.broker import BrokerConfig, LocalBroker
from streamscore.processes import Supervisor
from trainer.config import TrainerConfig

SERVICES = ("trainer", "scorer", "gateway", "monitor")
STOP_ORDER = ["producer", "monitor", "gateway", "scorer", "trainer"]
#: Topics larger than this many offsets are not read to count their records.
COUNT_LIMIT = 200_000
#: How many of the newest ``scores`` records per partition `status` reads.
SCORES_TAIL = 200


def supervisor(env: Mapping[str, str], home: Path) -> Supervisor:
    """The supervisor of ``streamscore up``: pid files and logs under the streamscore home."""
    return Supervisor(home / "run", home / "logs", env)


def uses_local_broker(env: Mapping[str, str]) -> bool:
    """True unless ``KAFKA_BOOTSTRAP_SERVERS`` points at another cluster."""
    return not env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()


def with_bootstrap(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with ``KAFKA_BOOTSTRAP_SERVERS`` set: the local broker's address if unset."""
    if uses_local_broker(env):
        return {**env, "KAFKA_BOOTSTRAP_SERVERS": BrokerConfig.from_env(env).bootstrap}
    return dict(env)


def up(env: Mapping[str, str]) -> int:
    """Start the broker (if local), create topics, start trainer, scorer, gateway, monitor."""
    broker_config = BrokerConfig.from_env(env)
    # The services' own settings, checked before anything starts (ConfigError says what is wrong).
    gateway_bind, monitor_bind = GatewayConfig.from_env(env).bind, MonitorConfig.from_env(env).bind
    if uses_local_broker(env):
        print(LocalBroker(broker_config).up().describe())
    env = with_bootstrap(env)
    settings = KafkaSettings.from_env(env)
    created = ensure_topics(settings, Topics.from_env(env), TopicLayout.from_env(env))
    if created:
        print(f"created topics: {', '.join(created)}")
    services = supervisor(env, broker_config.home)
    for name in SERVICES:
        pid = services.start(name, [name])
        print(f"{name}: running (pid {pid}), log: {services.log_file(name)}")
    print(f"gateway: http://{gateway_bind}/ping — publish points with `streamscore producer`")
    print(f"monitor: http://{monitor_bind}/")
    return 0


def down(env: Mapping[str, str]) -> int:
    """Stop every service `up` started, then the local broker."""
    broker_config = BrokerConfig.from_env(env)
    stopped = supervisor(env, broker_config.home).stop_all(STOP_ORDER)
    print(f"stopped: {', '.join(stopped)}" if stopped else "no service was running")
    if uses_local_broker(env):
        print("kafka stopped" if LocalBroker(broker_config).down() else "kafka was not running")
    return 0


@dataclass(frozen=True)
class GroupLag:
    """How far one consumer group is behind on its topic."""

    group: str
    topic: str
    lag: int | None  # None: the group has committed nothing yet


def status(env: Mapping[str, str]) -> int:
    """Print services, topics with their sizes, and consumer group lag; 0 when all are up."""
    broker_config = BrokerConfig.from_env(env)
    services = supervisor(env, broker_config.home)
    healthy = True
    if uses_local_broker(env):
        broker = LocalBroker(broker_config).status()
        print(broker.describe())
        healthy = broker.state == "up"
    print("services:")
    for name in sorted({*SERVICES, *services.names()}):
        pid = services.pid(name)
        print(f"  {name:<10} {f'up (pid {pid})' if pid else 'down'}")
        healthy = healthy and (pid is not None or name not in SERVICES)
    env = with_bootstrap(env)
    settings = KafkaSettings.from_env(env)
    topics = Topics.from_env(env)
    try:
        driver = driver_for(settings)
        sizes = topic_sizes(driver, list(topics.all().values()))
        lags = group_lags(driver, topics, env)
        models = model_overview(driver, topics) if sizes.get(topics.models) else []
    except StreamscoreError as exc:
        print(f"kafka at {settings.bootstrap_servers} did not answer: {exc}")
        return 1
    print("topics (records):")
    for name, size in sizes.items():
        print(f"  {name:<28} {_size(size)}")
    print("consumer groups (lag):")
    for lag in lags:
        shown = "nothing committed yet" if lag.lag is None else str(lag.lag)
        print(f"  {lag.group:<28} on {lag.topic}: {shown}")
    print("models (latest version, newest rolling score):" if models else "models: none yet")
    for line in models:
        print(f"  {line}")
    return 0 if healthy else 3


def _size(size: TopicSize | None) -> str:
    if size is None:
        return "missing"
    if size.exact:
        return str(size.records)
    return f"about {size.records} (offsets, transaction markers included)"


@dataclass(frozen=True)
class TopicSize:
    """How many records a topic holds: counted (exact), or its offsets when too large to read."""

    records: int
    exact: bool


def topic_sizes(
    driver: Driver, names: list[str], count_limit: int = COUNT_LIMIT
) -> dict[str, TopicSize | None]:
    """Records held by each topic; None when it does not exist.

    End minus start offsets counts transaction markers (and aborted records) too:
    a topic written in transactions, like ``models``, would show one marker per
    commit as a record. So each topic of at most ``count_limit`` offsets is read
    (read_committed) and its records counted; a larger one shows its offsets.
    """
    consumer = driver.consumer(group_id=None, read_committed=True)
    try:
        found = {name: consumer.partitions_for(name) for name in names}
        tps = [TopicPartition(name, p) for name, ids in found.items() for p in ids]
        if not tps:
            return dict.fromkeys(names)
        consumer.assign(tps)
        consumer.seek_to_beginning(tps)
        end = consumer.end_offsets(tps)
        start = {tp: consumer.position(tp) for tp in tps}
        offsets = {n: sum(end[tp] - start[tp] for tp in tps if tp.topic == n) for n in names}
        small = {n for n in names if found[n] and offsets[n] <= count_limit}
        counted = _count(consumer, [tp for tp in tps if tp.topic in small], end)
        return {
            name: None
            if not found[name]
            else TopicSize(counted.get(name, 0), True)
            if name in small
            else TopicSize(offsets[name], False)
            for name in names
        }
    finally:
        consumer.close()


def _count(
    consumer: Consumer, tps: list[TopicPartition], end: Mapping[TopicPartition, int]
) -> dict[str, int]:
    """Records per topic of ``tps`` from their start up to ``end``."""
    if not tps:
        return {}
    consumer.assign(tps)
    consumer.seek_to_beginning(tps)
    deadline = time.monotonic() + 30
    counted: dict[str, int] = {}
    while any(consumer.position(tp) < end[tp] for tp in tps):
        if time.monotonic() > deadline:
            raise BusError("counting records took over 30 s; is the broker overloaded?")
        for record in consumer.poll(0.2):
            if record.offset < end[record.tp]:
                counted[record.topic] = counted.get(record.topic, 0) + 1
    return counted


def model_overview(driver: Driver, topics: Topics) -> list[str]:
    """One line per model: its latest version, its newest rolling score, whether it serves."""
    with Table(driver, topics.models, keep_latest=True, topic_wait_s=5) as table:
        table.open()
        table.catch_up()
        models = [
            ModelVersion.from_bytes(r.value) for r in (table.latest or {}).values() if r.value
        ]
    scores: dict[str, Score] = {}
    with Table(driver, topics.scores, tail=SCORES_TAIL, topic_wait_s=5) as table:
        table.open()
        for record in table.catch_up():
            if record.value is None:
                continue
            score = Score.from_bytes(record.value)
            if score.model not in scores or scores[score.model].ts <= score.ts:
                scores[score.model] = score
    serving = _serving(driver, topics.predictions)
    lines = []
    for model in sorted(models, key=lambda m: m.name):
        latest = scores.get(model.name)
        shown = "no rolling score yet"
        if latest is not None:
            shown = (
                f"v{latest.version}: r2 {_num(latest.r2)} rmse {_num(latest.rmse)} "
                f"mae {_num(latest.mae)} over {latest.count}"
            )
        mark = f"  <- serving v{serving[1]}" if serving and serving[0] == model.name else ""
        lines.append(f"{model.name:<16} v{model.version:<6} {shown}{mark}")
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _serving(driver: Driver, topic: str) -> tuple[str, int] | None:
    """The model and version of the newest prediction (the last records of each partition)."""
    newest: tuple[int, str, int] | None = None
    with Table(driver, topic, tail=5, topic_wait_s=5) as table:
        table.open()
        for record in table.catch_up():
            try:
                prediction = Prediction.from_bytes(record.value)
            except MessageError:
                continue
            if newest is None or newest[0] <= record.timestamp:
                newest = (record.timestamp, prediction.model, prediction.version)
    return None if newest is None else (newest[1], newest[2])


def group_lags(driver: Driver, topics: Topics, env: Mapping[str, str]) -> list[GroupLag]:
    """Lag of the trainer's and the scorer's groups on ``points``."""
    groups = [TrainerConfig.from_env(env).group_id, ScorerConfig.from_env(env).group_id]
    reader = driver.consumer(group_id=None)
    try:
        tps = [TopicPartition(topics.points, p) for p in reader.partitions_for(topics.points)]
        end = reader.end_offsets(tps)
    finally:
        reader.close()
    return [GroupLag(group, topics.points, _lag(driver, group, end)) for group in groups]


def _lag(driver: Driver, group: str, end: Mapping[TopicPartition, int]) -> int | None:
    """How far ``group`` is behind ``end`` (None: it has committed nothing there).

    The consumer only asks for the group's committed offsets: it never joins it.
    """
    consumer: Consumer = driver.consumer(group_id=group)
    try:
        committed = consumer.committed(list(end))
    finally:
        consumer.close()
    if all(offset is None for offset in committed.values()):
        return None
    return sum(end[tp] - (committed.get(tp) or 0) for tp in end)


def main(argv: list[str]) -> int:
    """``up``, ``down`` or ``status``."""
    parser = argparse.ArgumentParser(prog="streamscore", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    configure_logging("streamscore", os.environ.get("STREAMSCORE_LOG_LEVEL", "WARNING"))
    env = dict(os.environ)
    try:
        return {"up": up, "down": down, "status": status}[args.action](env)
    except StreamscoreError as exc:
        print(f"streamscore {args.action}: {exc}", file=sys.stderr)
        return 1
