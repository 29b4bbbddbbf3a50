"""``streamscore kafka up|down|status`` driving real broker processes in a home of their own.

Every test gets its own ``STREAMSCORE_HOME`` and free ports, and shares only the jar
cache, so the broker other people use (the default home, port 9092) is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from kafka import TopicPartition

from bus.clients import make_admin, make_consumer, make_producer
from bus.messages import Point
from bus.settings import KafkaSettings
from streamscore.broker import BrokerConfig, LocalBroker, free_port

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
