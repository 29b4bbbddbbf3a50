"""``streamscore up | down | status``: the services in the background, and how they are doing."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bus.clients import driver_for
from bus.clients.base import Consumer, Driver, TopicPartition
from bus.settings import KafkaSettings
from bus.topics import TopicLayout, Topics, ensure_topics
from core.env import env_str
from core.errors import StreamscoreError
from core.logs import configure_logging
from streamscore.broker import BrokerConfig, LocalBroker
from streamscore.processes import Supervisor

SERVICES = ("trainer", "scorer", "gateway")
STOP_ORDER = ["producer", "gateway", "scorer", "trainer"]


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
    """Start the broker (if local), create topics, start trainer, scorer and gateway."""
    broker_config = BrokerConfig.from_env(env)
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
    bind = env_str(env, "STREAMSCORE_GATEWAY_BIND", "127.0.0.1:8000")
    print(f"gateway: http://{bind}/ping — publish points with `streamscore producer`")
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
    except StreamscoreError as exc:
        print(f"kafka at {settings.bootstrap_servers} did not answer: {exc}")
        return 1
    print("topics (records):")
    for name, size in sizes.items():
        print(f"  {name:<28} {'missing' if size is None else size}")
    print("consumer groups (lag):")
    for lag in lags:
        shown = "nothing committed yet" if lag.lag is None else str(lag.lag)
        print(f"  {lag.group:<28} on {lag.topic}: {shown}")
    return 0 if healthy else 3


def topic_sizes(driver: Driver, names: list[str]) -> dict[str, int | None]:
    """Records held by each topic (end minus start offsets); None when it does not exist."""
    consumer = driver.consumer(group_id=None)
    try:
        found = {name: consumer.partitions_for(name) for name in names}
        tps = [TopicPartition(name, p) for name, ids in found.items() for p in ids]
        if not tps:
            return dict.fromkeys(names)
        consumer.assign(tps)
        consumer.seek_to_beginning(tps)
        end = consumer.end_offsets(tps)
        start = {tp: consumer.position(tp) for tp in tps}
        return {
            name: sum(end[tp] - start[tp] for tp in tps if tp.topic == name)
            if found[name]
            else None
            for name in names
        }
    finally:
        consumer.close()


def group_lags(driver: Driver, topics: Topics, env: Mapping[str, str]) -> list[GroupLag]:
    """Lag of the trainer's and the scorer's groups on ``points``."""
    groups = [
        env_str(env, "STREAMSCORE_TRAINER_GROUP", "streamscore-trainer"),
        env_str(env, "STREAMSCORE_SCORER_GROUP", "streamscore-scorer"),
    ]
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
