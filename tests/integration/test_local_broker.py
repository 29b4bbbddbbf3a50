"""``streamscore kafka up|down|status`` driving real broker processes in a home of their own.

Every test gets its own ``STREAMSCORE_HOME`` and free ports, and shares only the jar
cache, so the broker other people use (the default home, port 9092) is never touched.
One test starts a cluster of three nodes and kills the leader of a partition.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from bus.clients import make_admin, make_consumer, make_producer
from bus.messages import Point
from bus.settings import KafkaSettings
from bus.topics import TopicLayout, Topics, ensure_topics
from streamscore.broker import BrokerConfig, LocalBroker, free_port, free_port_range

pytestmark = pytest.mark.skipif(
    not (os.environ.get("JAVA_HOME") or shutil.which("java")),
    reason="the local broker needs Java",
)

STOPPED = 3  # exit code of `streamscore kafka status` when the broker is not up


@dataclass(frozen=True)
class Home:
    """One broker's home, ports and the environment that points the CLI at them."""

    path: Path
    port: int
    controller_port: int
    env: dict[str, str]

    @property
    def config(self) -> BrokerConfig:
        """What the CLI reads from ``env``."""
        return BrokerConfig.from_env(self.env)


def cli(home: Home, action: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``streamscore kafka <action>`` as its own process."""
    script = Path(sys.executable).parent / "streamscore"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "streamscore"]
    return subprocess.run(
        [*command, "kafka", action],
        env=home.env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def two_free_ports() -> tuple[int, int]:
    """Two different free ports (``free_port`` alone may hand out the same one twice)."""
    port = free_port()
    other = free_port()
    while other == port:
        other = free_port()
    return port, other


def broker_processes(home: Path) -> list[int]:
    """Pids of every Kafka broker process whose command line mentions ``home``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline.split(b"\0") and str(home).encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def make_home(tmp_path: Path) -> Iterator[Callable[..., Home]]:
    """Make broker homes with free ports and the shared jar cache; stop their brokers after."""
    made: list[Home] = []
    cache = BrokerConfig.from_env().cache_dir  # the jars every broker of this machine shares

    def make(**extra_env: str) -> Home:
        path = tmp_path / f"home-{len(made)}"
        port, controller_port = two_free_ports()
        env = {
            **os.environ,
            "STREAMSCORE_HOME": str(path),
            "STREAMSCORE_CACHE": str(cache),
            "STREAMSCORE_KAFKA_PORT": str(port),
            "STREAMSCORE_KAFKA_CONTROLLER_PORT": str(controller_port),
            "STREAMSCORE_KAFKA_HEAP": "512m",
            **extra_env,
        }
        home = Home(path, port, controller_port, env)
        made.append(home)
        return home

    yield make
    for home in made:
        LocalBroker(home.config).down()
        for pid in broker_processes(home.path):  # last resort: never leave a broker behind
            os.kill(pid, 9)


def round_trip(bootstrap: str, topic: str, value: bytes, expect: int = 1) -> list[bytes]:
    """Send ``value`` to ``topic`` (created if missing) and read the topic from the start."""
    settings = replace(KafkaSettings.from_env({}), bootstrap_servers=bootstrap)
    admin = make_admin(settings)
    try:
        if topic not in admin.list_topics():
            admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}})
            admin.wait_for_topics([topic])
    finally:
        admin.close()
    producer = make_producer(settings)
    try:
        producer.send(topic, key=b"k", value=value).get(timeout=20)
    finally:
        producer.close(timeout=5)
    consumer = make_consumer(settings, group_id=None)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        values: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(values) < expect and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                values.extend(record.value for record in batch)
        return values
    finally:
        consumer.close()


def pid_in(text: str) -> int:
    """The pid a status line gives."""
    match = re.search(r"\(pid (\d+)\)", text)
    assert match, f"no pid in {text!r}"
    return int(match.group(1))


def test_status_up_again_down_with_a_stale_pid_file_first(make_home: Callable[..., Home]) -> None:
    home = make_home()
    config = home.config
    bootstrap = f"127.0.0.1:{home.port}"

    stopped = cli(home, "status")
    assert (stopped.returncode, stopped.stdout.strip()) == (STOPPED, "kafka is stopped")

    # a pid file left by a broker that died: stopped, and the stale file is cleaned up
    config.pid_file.parent.mkdir(parents=True)
    config.pid_file.write_text(f"{dead_pid()}\n")
    stale = cli(home, "status")
    assert (stale.returncode, stale.stdout.strip()) == (STOPPED, "kafka is stopped")
    assert not config.pid_file.exists()

    up = cli(home, "up")
    assert up.returncode == 0, up.stderr
    assert up.stdout.startswith(f"kafka is up at {bootstrap} (pid ")
    assert f"log: {config.log_file}" in up.stdout
    pid = pid_in(up.stdout)
    assert broker_processes(home.path) == [pid]
    assert config.pid_file.read_text().strip() == str(pid)
    assert config.log_file.exists()
    assert "Kafka Server started" in config.log_file.read_text()
    assert not (home.path / "cache").exists()  # the shared jars were used, not fetched again

    point = Point(id="p-000017", x=[0.25, -1.5], y=3.71).to_bytes()
    assert round_trip(bootstrap, "smoke", point) == [point]

    again = cli(home, "up")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"already up: kafka is up at {bootstrap} (pid {pid})")
    assert broker_processes(home.path) == [pid]

    status = cli(home, "status")
    assert status.returncode == 0
    assert (
        status.stdout.strip() == f"kafka is up at {bootstrap} (pid {pid}); log: {config.log_file}"
    )

    down = cli(home, "down")
    assert (down.returncode, down.stdout.strip()) == (0, "kafka stopped")
    assert broker_processes(home.path) == []
    assert not config.pid_file.exists()
    after = cli(home, "status")
    assert (after.returncode, after.stdout.strip()) == (STOPPED, "kafka is stopped")
    assert cli(home, "down").stdout.strip() == "kafka was not running"


def test_a_pid_file_naming_another_live_process_is_not_obeyed(
    make_home: Callable[..., Home],
) -> None:
    home = make_home()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        home.config.pid_file.parent.mkdir(parents=True)
        home.config.pid_file.write_text(f"{bystander.pid}\n")
        down = cli(home, "down")
        assert (down.returncode, down.stdout.strip()) == (0, "kafka was not running")
        assert bystander.poll() is None  # still running: down only stops its own broker
        assert not home.config.pid_file.exists()
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.parametrize("which", ["port", "controller_port"])
def test_up_fails_fast_naming_a_port_that_is_taken(
    make_home: Callable[..., Home], which: str
) -> None:
    home = make_home()
    taken = getattr(home, which)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        started = time.monotonic()
        up = cli(home, "up")
        elapsed = time.monotonic() - started
    assert elapsed < 10
    assert up.returncode == 1
    assert f"port {taken} on 127.0.0.1 is taken by another process" in up.stderr
    assert "STREAMSCORE_KAFKA_PORT" in up.stderr
    assert broker_processes(home.path) == []
    assert not home.config.pid_file.exists()


def test_a_broker_that_dies_while_starting_points_at_its_log(
    make_home: Callable[..., Home],
) -> None:
    home = make_home(STREAMSCORE_KAFKA_HEAP="lots")  # the JVM refuses -Xmxlots at once
    started = time.monotonic()
    up = cli(home, "up")
    assert time.monotonic() - started < 60
    assert up.returncode == 1
    log_file = home.config.log_file
    assert log_file.exists()
    assert f"kafka exited during start (code 1); see {log_file}" in up.stderr
    assert "Invalid maximum heap size" in up.stderr  # the log's tail comes with the error
    assert "Invalid maximum heap size" in log_file.read_text()
    assert not home.config.pid_file.exists()
    assert cli(home, "status").returncode == STOPPED


# --- a local cluster of three nodes --------------------------------------------------


def cluster_home(tmp_path: Path) -> Home:
    """A home for a three-node cluster: six consecutive free ports from a base port."""
    base = free_port_range(6)
    path = tmp_path / "cluster"
    env = {
        **os.environ,
        "STREAMSCORE_HOME": str(path),
        "STREAMSCORE_CACHE": str(BrokerConfig.from_env().cache_dir),
        "STREAMSCORE_KAFKA_PORT": str(base),
        "STREAMSCORE_KAFKA_HEAP": "512m",
    }
    env.pop("STREAMSCORE_KAFKA_BROKERS", None)
    env.pop("STREAMSCORE_KAFKA_CONTROLLER_PORT", None)
    return Home(path, base, base + 3, env)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Home]:
    """A cluster home; whatever runs in it is stopped after the test, even on failure."""
    home = cluster_home(tmp_path)
    yield home
    LocalBroker(replace(home.config, brokers=3)).down()
    for pid in broker_processes(home.path):
        os.kill(pid, 9)


def leader_of(settings: KafkaSettings, topic: str, partition: int) -> int:
    """The node id leading ``partition`` of ``topic``."""
    admin = make_admin(settings)
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    for info in described["partitions"]:
        if info["partition_index"] == partition:
            return int(info["leader_id"])
    raise AssertionError(f"{topic} has no partition {partition}: {described}")


def test_cluster_config_gives_each_node_its_ports_and_folders(tmp_path: Path) -> None:
    config = BrokerConfig.from_env(
        {"STREAMSCORE_HOME": str(tmp_path), "STREAMSCORE_KAFKA_PORT": "19092"}
        | {"STREAMSCORE_KAFKA_BROKERS": "3"}
    )
    nodes = config.nodes
    assert [(n.node_id, n.port, n.controller_port) for n in nodes] == [
        (1, 19092, 19095),
        (2, 19093, 19096),
        (3, 19094, 19097),
    ]
    assert [n.pid_file for n in nodes] == [
        tmp_path / "kafka" / f"node-{i}" / "kafka.pid" for i in (1, 2, 3)
    ]
    assert nodes[2].log_file == tmp_path / "logs" / "kafka-3.log"
    assert config.bootstrap == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    assert (config.replication, config.min_insync, config.heap) == (3, 2, "512m")
    single = BrokerConfig.from_env({"STREAMSCORE_HOME": str(tmp_path)})
    assert [(n.port, n.controller_port, n.pid_file) for n in single.nodes] == [
        (9092, 9093, tmp_path / "kafka" / "kafka.pid")
    ]
    assert (single.replication, single.min_insync, single.heap) == (1, 1, "768m")


@pytest.mark.timeout(900)  # three JVMs started twice on two cores
def test_a_three_node_cluster_rides_through_the_loss_of_a_partition_leader(
    cluster: Home, unique_name: Callable[[str], str]
) -> None:
    up = subprocess.run(
        [sys.executable, "-m", "streamscore", "kafka", "up", "--brokers", "3"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    bootstrap = ",".join(f"127.0.0.1:{cluster.port + i}" for i in range(3))
    assert up.stdout.startswith(f"kafka cluster of 3 brokers is up at {bootstrap}: node 1 up")
    assert len(broker_processes(cluster.path)) == 3
    config = cluster.config  # down and status find the cluster without being told its size
    assert config.brokers == 3
    assert cli(cluster, "status").returncode == 0

    settings = replace(KafkaSettings.from_env({}), bootstrap_servers=bootstrap)
    topics = Topics.with_prefix(unique_name("c") + ".")
    ensure_topics(settings, topics, TopicLayout(partitions=3, reply_partitions=1))
    admin = make_admin(settings)
    try:
        (described,) = admin.describe_topics([topics.points])
        resource = ConfigResource(ConfigResourceType.TOPIC, topics.points, ["min.insync.replicas"])
        configs = admin.describe_configs([resource])
    finally:
        admin.close()
    assert {len(p["replica_nodes"]) for p in described["partitions"]} == {3}
    assert configs["topic"][topics.points]["min.insync.replicas"]["value"] == "2"

    producer = make_producer(settings, request_timeout_ms=10_000)
    try:
        for i in range(50):
            producer.send(topics.points, value=f"before-{i}".encode(), partition=0)
        producer.flush(timeout=30)

        leader = leader_of(settings, topics.points, 0)
        leader_pid = config.node(leader).pid_file.read_text().strip()
        os.kill(int(leader_pid), signal.SIGKILL)
        killed_at = time.monotonic()
        futures = [
            producer.send(topics.points, value=f"after-{i}".encode(), partition=0)
            for i in range(50)
        ]
        for future in futures:  # acks=all: two of the three copies have each record
            future.get(timeout=60)
        assert time.monotonic() - killed_at < 60
    finally:
        producer.close(timeout=5)
    deadline = time.monotonic() + 30  # the survivors' metadata follows the election
    while leader_of(settings, topics.points, 0) == leader and time.monotonic() < deadline:
        time.sleep(0.5)
    assert leader_of(settings, topics.points, 0) != leader

    consumer = make_consumer(settings, group_id=None)
    try:
        consumer.assign([TopicPartition(topics.points, 0)])
        consumer.seek_to_beginning()
        values: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(values) < 100 and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                values.extend(record.value for record in batch)
    finally:
        consumer.close()
    expected = [f"before-{i}".encode() for i in range(50)]
    assert values == expected + [f"after-{i}".encode() for i in range(50)]

    degraded = cli(cluster, "status")
    assert degraded.returncode == STOPPED
    assert f"node {leader} stopped" in degraded.stdout
    assert degraded.stdout.startswith("kafka cluster of 3 brokers is degraded")

    again = cli(cluster, "up", timeout_s=300)  # starts the killed node again
    assert again.returncode == 0, again.stderr
    assert f"node {leader} up (pid " in again.stdout
    assert len(broker_processes(cluster.path)) == 3

    down = cli(cluster, "down")
    assert (down.returncode, down.stdout.strip()) == (0, "kafka stopped")
    assert broker_processes(cluster.path) == []
    assert (cli(cluster, "status").returncode, BrokerConfig.from_env(cluster.env).brokers) == (
        STOPPED,
        1,
    )


def streamscore(
    env: dict[str, str], *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``streamscore <args>`` as its own process."""
    script = Path(sys.executable).parent / "streamscore"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "streamscore"]
    return subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def test_without_a_bootstrap_every_command_talks_to_the_configured_port(
    make_home: Callable[..., Home],
) -> None:
    home = make_home()
    env = {k: v for k, v in home.env.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["STREAMSCORE_TOPIC_PREFIX"] = f"port-{home.port}."
    assert cli(home, "up").returncode == 0
    pid = pid_in(LocalBroker(home.config).status().describe())

    topics = streamscore(env, "topics")
    assert topics.returncode == 0, topics.stderr
    produced = streamscore(env, "producer", "--count", "7", "--rate", "0")
    assert produced.returncode == 0, produced.stderr
    status = streamscore(env, "status")
    assert f"kafka is up at 127.0.0.1:{home.port} (pid {pid})" in status.stdout, status.stdout

    settings = replace(KafkaSettings.from_env({}), bootstrap_servers=f"127.0.0.1:{home.port}")
    consumer = make_consumer(settings, group_id=None)
    try:
        points = TopicPartition(Topics.from_env(env).points, 0)
        assert sum(consumer.end_offsets([points]).values()) == 7
    finally:
        consumer.close()


def test_status_and_up_refuse_a_broker_of_this_home_on_another_port(
    make_home: Callable[..., Home],
) -> None:
    home = make_home()
    assert cli(home, "up").returncode == 0
    other_port = free_port()
    elsewhere = {**home.env, "STREAMSCORE_KAFKA_PORT": str(other_port)}
    elsewhere.pop("STREAMSCORE_KAFKA_CONTROLLER_PORT")
    elsewhere.pop("KAFKA_BOOTSTRAP_SERVERS", None)

    status = streamscore(elsewhere, "kafka", "status")
    assert status.returncode == STOPPED
    assert f"runs on 127.0.0.1:{home.port}" in status.stdout, status.stdout
    assert f"set STREAMSCORE_KAFKA_PORT={home.port}" in status.stdout
    up = streamscore(elsewhere, "up")
    assert up.returncode == 1
    assert f"runs on 127.0.0.1:{home.port}" in up.stderr, up.stderr
    assert not (home.path / "run").exists()  # no service was started
