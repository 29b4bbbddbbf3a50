"""The local Apache Kafka broker: install its jars, start, check and stop it.

The jars come from Maven Central through the ``pom.xml`` shipped in
``streamscore.kafka_files`` into a cache folder. By default one KRaft node (broker
and controller) runs on loopback, with its data, pid file and log under a state
folder (``STREAMSCORE_HOME``), never inside the installed package. ``brokers=3`` runs a local
cluster instead: three such nodes, each with its own ports (counted up from the
base ports) and folders, one controller quorum, and topics replicated three times
with two copies in sync. Nothing here needs Docker.
"""

from __future__ import annotations

import base64
import importlib.resources
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from bus.settings import LOCAL_PORT
from core.env import env_int, env_str
from core.errors import BrokerError, ConfigError
from streamscore.processes import alive, command_line

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: The package holding the broker's pom.xml, log4j2.yaml and server.properties.template.
KAFKA_FILES = "streamscore.kafka_files"
MAIN_CLASS = "kafka.Kafka"
MAX_BROKERS = 9
#: Replicas of every topic in a local cluster, and how many must be in sync for a write.
CLUSTER_REPLICATION = 3
CLUSTER_MIN_INSYNC = 2


@dataclass(frozen=True)
class BrokerNode:
    """One Kafka process of the local broker: its node id, ports and files."""

    node_id: int
    host: str
    port: int
    controller_port: int
    state_dir: Path
    log_file: Path

    @property
    def bootstrap(self) -> str:
        """The node's client address."""
        return f"{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        """The node's log.dirs."""
        return self.state_dir / "data"

    @property
    def pid_file(self) -> Path:
        """The running node's process id."""
        return self.state_dir / "kafka.pid"

    @property
    def properties_file(self) -> Path:
        """The node's generated server.properties."""
        return self.state_dir / "server.properties"


@dataclass(frozen=True)
class BrokerConfig:
    """Where the local broker keeps its jars and state, and the ports it listens on.

    With ``brokers`` > 1, node ``i`` (1-based) listens on ``port + i - 1`` and
    ``controller_port + i - 1``.
    """

    home: Path = Path(".streamscore")
    cache_dir: Path = Path(".streamscore") / "cache"
    host: str = "127.0.0.1"
    port: int = LOCAL_PORT
    controller_port: int = 9093
    heap: str = "768m"
    start_timeout_s: float = 90.0
    stop_timeout_s: float = 30.0
    brokers: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BrokerConfig:
        """Read ``STREAMSCORE_HOME``, ``STREAMSCORE_KAFKA_PORT`` and friends.

        The jar cache defaults to ``<home>/cache``; ``STREAMSCORE_CACHE`` lets brokers
        with other homes share one. ``STREAMSCORE_KAFKA_BROKERS`` defaults to the size
        of the cluster last started in this home (1 when none runs). Controller ports
        start after the client ports; each node's heap defaults to 768m alone, 512m in
        a cluster.
        """
        env = os.environ if env is None else env
        port = env_int(env, "STREAMSCORE_KAFKA_PORT", LOCAL_PORT, minimum=1)
        home = Path(env_str(env, "STREAMSCORE_HOME", str(default_home())))
        brokers = env_int(env, "STREAMSCORE_KAFKA_BROKERS", started_size(home), minimum=1)
        if brokers > MAX_BROKERS:
            raise ConfigError(
                f"STREAMSCORE_KAFKA_BROKERS={brokers}: at most {MAX_BROKERS} local brokers"
            )
        return cls(
            home=home,
            cache_dir=Path(env_str(env, "STREAMSCORE_CACHE", str(home / "cache"))),
            port=port,
            controller_port=env_int(
                env, "STREAMSCORE_KAFKA_CONTROLLER_PORT", port + brokers, minimum=1
            ),
            heap=env_str(env, "STREAMSCORE_KAFKA_HEAP", cls.heap if brokers == 1 else "512m"),
            brokers=brokers,
        )

    @property
    def nodes(self) -> tuple[BrokerNode, ...]:
        """Every node of the local broker, node id 1 first."""
        if self.brokers == 1:
            return (
                BrokerNode(
                    1, self.host, self.port, self.controller_port, self.state_dir, self.log_file
                ),
            )
        return tuple(
            BrokerNode(
                node_id=i,
                host=self.host,
                port=self.port + i - 1,
                controller_port=self.controller_port + i - 1,
                state_dir=self.state_dir / f"node-{i}",
                log_file=self.home / "logs" / f"kafka-{i}.log",
            )
            for i in range(1, self.brokers + 1)
        )

    def node(self, node_id: int) -> BrokerNode:
        """The node with this id (as Kafka reports it, e.g. as a partition's leader)."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise BrokerError(f"the local broker has no node {node_id} (nodes 1 to {self.brokers})")

    @property
    def bootstrap(self) -> str:
        """The address clients connect to (every node's, comma-separated, for a cluster)."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def replication(self) -> int:
        """Copies of every internal topic (and of topics created without a factor)."""
        return min(CLUSTER_REPLICATION, self.brokers)

    @property
    def min_insync(self) -> int:
        """Copies that must be in sync for a write with acks=all to succeed."""
        return 1 if self.brokers == 1 else min(CLUSTER_MIN_INSYNC, self.replication)

    @property
    def lib_dir(self) -> Path:
        """The jar cache (brokers with other homes can share it)."""
        return self.cache_dir / "kafka-lib"

    @property
    def state_dir(self) -> Path:
        """This broker's data, config, pid file and log (a cluster: a folder per node)."""
        return self.home / "kafka"

    @property
    def data_dir(self) -> Path:
        """The single node's log.dirs."""
        return self.state_dir / "data"

    @property
    def pid_file(self) -> Path:
        """The running single node's process id."""
        return self.state_dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        """Where the single node's output goes."""
        return self.home / "logs" / "kafka.log"

    @property
    def properties_file(self) -> Path:
        """The single node's generated server.properties."""
        return self.state_dir / "server.properties"

    @property
    def size_file(self) -> Path:
        """Holds the number of nodes while a cluster of more than one is started."""
        return self.state_dir / "cluster-size"

    @property
    def cluster_id_file(self) -> Path:
        """The KRaft cluster id every node of a cluster is formatted with."""
        return self.state_dir / "cluster-id"


def default_home() -> Path:
    """The state folder when ``STREAMSCORE_HOME`` is unset.

    In a source checkout (an editable install) it is the checkout's ``.streamscore``,
    wherever the command runs; an installed package uses ``./.streamscore`` of the
    current directory, never a folder inside the installation.
    """
    if (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "streamscore").is_dir():
        return PROJECT_ROOT / ".streamscore"
    return Path.cwd() / ".streamscore"


def kafka_file(name: str) -> str:
    """The text of one of the broker's files shipped with the package."""
    return importlib.resources.files(KAFKA_FILES).joinpath(name).read_text(encoding="utf-8")


def started_size(home: Path) -> int:
    """How many nodes the cluster started in ``home`` has (1 when none was)."""
    try:
        size = int((home / "kafka" / "cluster-size").read_text().strip())
    except (OSError, ValueError):
        return 1
    return size if 1 <= size <= MAX_BROKERS else 1


@dataclass(frozen=True)
class NodeStatus:
    """What one node of a local cluster is doing."""

    node_id: int
    state: str  # "up", "starting", "stopped", "mismatch" (see note)
    pid: int | None
    bootstrap: str
    note: str = ""

    def describe(self) -> str:
        """``node 2 up (pid 123)``."""
        pid = f" (pid {self.pid})" if self.pid is not None else ""
        return f"node {self.node_id} {self.state}{pid}"


@dataclass(frozen=True)
class BrokerStatus:
    """What the local broker is doing right now.

    For a cluster, ``nodes`` holds each node's state and ``state`` sums them up:
    ``degraded`` when some nodes run and others are stopped.
    """

    state: str  # "up", "starting", "degraded", "stopped", "mismatch" (see describe)
    pid: int | None
    bootstrap: str
    log_file: Path
    nodes: tuple[NodeStatus, ...] = ()

    def describe(self) -> str:
        """One line for a person."""
        notes = [node.note for node in self.nodes if node.note]
        if notes:
            return "kafka is not the broker configured here: " + "; ".join(notes)
        if len(self.nodes) > 1:
            if self.state == "stopped":
                return "kafka is stopped"
            each = ", ".join(node.describe() for node in self.nodes)
            return (
                f"kafka cluster of {len(self.nodes)} brokers is {self.state} at {self.bootstrap}: "
                f"{each}; logs: {self.log_file}"
            )
        if self.state == "up":
            return f"kafka is up at {self.bootstrap} (pid {self.pid}); log: {self.log_file}"
        if self.state == "starting":
            return f"kafka is starting (pid {self.pid}), not answering yet; log: {self.log_file}"
        return "kafka is stopped"

    def pids(self) -> dict[int, int]:
        """Node id -> pid of every running node."""
        return {node.node_id: node.pid for node in self.nodes if node.pid is not None}


class LocalBroker:
    """Drives the local broker (one node or a cluster) described by a BrokerConfig."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config

    # --- install ---------------------------------------------------------------

    def install(self) -> Path:
        """Resolve the broker's jars into the cache (once); return the jar folder."""
        lib = self.config.lib_dir
        if (lib / ".complete").exists():
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (mvn) is not on PATH; it is needed once to fetch Kafka's jars")
        lib.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="kafka-lib-", dir=lib.parent))
        log.info("fetching Kafka jars with Maven into %s", lib)
        with tempfile.TemporaryDirectory(prefix="kafka-pom-", dir=lib.parent) as project:
            pom = Path(project) / "pom.xml"
            pom.write_text(kafka_file("pom.xml"), encoding="utf-8")
            result = subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(pom),
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={staging}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
        if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise BrokerError(
                f"Maven could not fetch Kafka's jars (exit {result.returncode}):\n{tail}"
            )
        (staging / ".complete").touch()
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
        return lib

    # --- status ------------------------------------------------------------------

    def status(self) -> BrokerStatus:
        """Up (answering), starting (process alive, port closed), degraded or stopped."""
        nodes = tuple(self._node_status(node) for node in self.config.nodes)
        states = {node.state for node in nodes}
        if "mismatch" in states:
            state = "mismatch"
        elif states == {"up"}:
            state = "up"
        elif states == {"stopped"}:
            state = "stopped"
        elif "stopped" in states:
            state = "degraded"
        else:
            state = "starting"
        pid = next((node.pid for node in nodes if node.pid is not None), None)
        log_file = self.config.log_file
        if self.config.brokers > 1:
            log_file = self.config.home / "logs"
        return BrokerStatus(state, pid, self.config.bootstrap, log_file, nodes)

    def _node_status(self, node: BrokerNode) -> NodeStatus:
        """Up only when the process of this home runs and what answers is that broker.

        A broker of this home listening on another port than the configured one, or
        another Kafka answering on the configured port, is a ``mismatch`` with a note
        that says what to do.
        """
        pid = self._live_pid(node)
        if pid is None:
            return NodeStatus(node.node_id, "stopped", None, node.bootstrap)
        running = listener_port(node.properties_file)
        if running is not None and running != node.port:
            base = running - node.node_id + 1
            note = (
                f"the broker of {self.config.home} runs on {node.host}:{running} (pid {pid}), "
                f"not on {node.bootstrap} as configured: set STREAMSCORE_KAFKA_PORT={base}, "
                "or stop it with `streamscore kafka down`"
            )
            return NodeStatus(node.node_id, "mismatch", pid, node.bootstrap, note)
        if not _port_open(node.host, node.port):
            return NodeStatus(node.node_id, "starting", pid, node.bootstrap)
        answered = cluster_id_at(node.bootstrap)
        ours = formatted_cluster_id(node.data_dir)
        if answered is None or ours is None:
            return NodeStatus(node.node_id, "starting", pid, node.bootstrap)
        if answered != ours:
            note = (
                f"another Kafka (cluster {answered}) answers on {node.bootstrap}, not the broker "
                f"of {self.config.home} (cluster {ours}, pid {pid}); stop one of them or "
                "choose other ports with STREAMSCORE_KAFKA_PORT"
            )
            return NodeStatus(node.node_id, "mismatch", pid, node.bootstrap, note)
        return NodeStatus(node.node_id, "up", pid, node.bootstrap)

    def _live_pid(self, node: BrokerNode) -> int | None:
        """The node's pid if its process is alive; a stale pid file is removed."""
        try:
            pid = int(node.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _is_our_broker(pid, node.properties_file):
            return pid
        log.info("removing stale pid file %s (pid %d is not running)", node.pid_file, pid)
        node.pid_file.unlink(missing_ok=True)
        return None

    # --- up / down -----------------------------------------------------------------

    def up(self) -> BrokerStatus:
        """Start every node that is not running and wait until all answer.

        A no-op when everything is up; after a node was killed, this restarts it.
        """
        current = self.status()
        if current.state == "up":
            return current
        if current.state == "mismatch":
            raise BrokerError(current.describe())
        if self.config.brokers > 1:
            single = replace(self.config, brokers=1)
            pid = LocalBroker(single)._live_pid(single.nodes[0])
            if pid is not None:
                raise BrokerError(
                    f"the single-node broker of {self.config.home} runs (pid {pid}); stop it "
                    "with `streamscore kafka down` before starting a cluster there"
                )
        stopped = [
            node
            for node, state in zip(self.config.nodes, current.nodes, strict=True)
            if state.state == "stopped"
        ]
        for node in stopped:
            for port in (node.port, node.controller_port):
                if _port_open(node.host, port):
                    raise BrokerError(
                        f"port {port} on {node.host} is taken by another process; stop it or "
                        "choose other ports with STREAMSCORE_KAFKA_PORT / "
                        "STREAMSCORE_KAFKA_CONTROLLER_PORT"
                    )
        processes: dict[int, subprocess.Popen[bytes]] = {}
        if stopped:
            java = _java()
            classpath = f"{self.install()}/*"
            for node in stopped:
                self._write_properties(node)
            self._format(java, classpath, stopped)
            if self.config.brokers > 1:
                self.config.size_file.write_text(f"{self.config.brokers}\n")
            for node in stopped:
                processes[node.node_id] = self._start(java, classpath, node)
        return self._wait_until_up(processes)

    def _start(self, java: str, classpath: str, node: BrokerNode) -> subprocess.Popen[bytes]:
        node.log_file.parent.mkdir(parents=True, exist_ok=True)
        with node.log_file.open("ab") as out:
            process = subprocess.Popen(
                [
                    java,
                    f"-Xmx{self.config.heap}",
                    "-Xms128m",
                    "-XX:+UseG1GC",
                    "-XX:MaxGCPauseMillis=20",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={self._log_config()}",
                    "-cp",
                    classpath,
                    MAIN_CLASS,
                    str(node.properties_file),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        node.pid_file.write_text(f"{process.pid}\n")
        return process

    def down(self) -> bool:
        """Stop every node (SIGTERM, then SIGKILL after the timeout); False if none was up."""
        running = [(node, pid) for node in self.config.nodes if (pid := self._live_pid(node))]
        self.config.size_file.unlink(missing_ok=True)
        if not running:
            return False
        for _, pid in running:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_timeout_s
        while any(alive(pid) for _, pid in running) and time.monotonic() < deadline:
            time.sleep(0.1)
        for node, pid in running:
            if alive(pid):
                log.warning(
                    "kafka node %d (pid %d) did not stop in %.0fs; killing it",
                    node.node_id,
                    pid,
                    self.config.stop_timeout_s,
                )
                os.kill(pid, signal.SIGKILL)
                while alive(pid):
                    time.sleep(0.05)
            node.pid_file.unlink(missing_ok=True)
        # a killed JVM's leader thread is gone before its last thread closes the sockets
        for node, _ in running:
            _wait_closed(node, deadline=time.monotonic() + 10)
        return True

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> int | None:
        """Send ``sig`` (SIGKILL: a crash) to one node and wait until it is gone; its pid.

        The pid file stays, as after a real crash; `up` starts the node again.
        None when the node was not running.
        """
        node = self.config.node(node_id)
        pid = self._live_pid(node)
        if pid is None:
            return None
        os.kill(pid, sig)
        deadline = time.monotonic() + self.config.stop_timeout_s
        # a killed JVM's leader thread is gone before its last thread closes the sockets
        while alive(pid) or _port_open(node.host, node.port):
            if time.monotonic() > deadline:
                raise BrokerError(f"kafka node {node_id} (pid {pid}) did not die on signal {sig}")
            time.sleep(0.05)
        return pid

    def _wait_until_up(self, processes: Mapping[int, subprocess.Popen[bytes]]) -> BrokerStatus:
        deadline = time.monotonic() + self.config.start_timeout_s
        nodes = self.config.nodes
        while time.monotonic() < deadline:
            for node in nodes:
                process = processes.get(node.node_id)
                code = process.poll() if process is not None else None
                if process is None and self._live_pid(node) is None:
                    code = 1
                if code is not None:
                    node.pid_file.unlink(missing_ok=True)
                    which = "kafka" if len(nodes) == 1 else f"kafka node {node.node_id}"
                    raise BrokerError(
                        f"{which} exited during start (code {code}); see {node.log_file}:\n"
                        + _tail(node.log_file)
                    )
            if all(_port_open(node.host, node.port) for node in nodes) and _answers(
                self.config.bootstrap, len(nodes)
            ):
                status = self.status()
                if status.state == "mismatch":
                    raise BrokerError(status.describe())
                if status.state == "up":
                    return status
            time.sleep(0.2)
        raise BrokerError(
            f"kafka did not answer on {self.config.bootstrap} within "
            f"{self.config.start_timeout_s:.0f}s; see {self.status().log_file}"
        )

    def _write_properties(self, node: BrokerNode) -> None:
        template = kafka_file("server.properties.template")
        voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.config.nodes)
        node.state_dir.mkdir(parents=True, exist_ok=True)
        node.properties_file.write_text(
            template.format(
                node_id=node.node_id,
                voters=voters,
                host=node.host,
                port=node.port,
                controller_port=node.controller_port,
                data_dir=node.data_dir,
                replication=self.config.replication,
                min_insync=self.config.min_insync,
            )
        )

    def _log_config(self) -> Path:
        """The broker's log4j2.yaml, written into the state folder (Java needs a file)."""
        path = self.config.state_dir / "log4j2.yaml"
        text = kafka_file("log4j2.yaml")
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return path

    def _format(self, java: str, classpath: str, nodes: list[BrokerNode]) -> None:
        """Format the KRaft storage of nodes that have none (in parallel), once.

        Every node of a cluster gets the same cluster id (kept in the state folder).
        """
        todo = [node for node in nodes if not (node.data_dir / "meta.properties").exists()]
        if not todo:
            return
        cluster_id = self._cluster_id()
        running: list[tuple[BrokerNode, subprocess.Popen[str]]] = []
        for node in todo:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            command = [
                java,
                "-cp",
                classpath,
                f"-Dlog4j2.configurationFile={self._log_config()}",
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                "-t",
                cluster_id,
                "-c",
                str(node.properties_file),
            ]
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            running.append((node, process))
        failed = []
        for node, process in running:
            output, _ = process.communicate()
            if process.returncode != 0:
                failed.append(f"node {node.node_id}: {output}")
        if failed:
            raise BrokerError("formatting kafka's storage failed:\n" + "\n".join(failed))

    def _cluster_id(self) -> str:
        if self.config.brokers == 1:
            return _cluster_id()
        try:
            return self.config.cluster_id_file.read_text().strip()
        except FileNotFoundError:
            cluster_id = _cluster_id()
            self.config.cluster_id_file.parent.mkdir(parents=True, exist_ok=True)
            self.config.cluster_id_file.write_text(f"{cluster_id}\n")
            return cluster_id


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_range(count: int, *, low: int = 20_000, high: int = 32_000) -> int:
    """The first of ``count`` consecutive loopback ports that are all free right now.

    The range stays below Linux's ephemeral ports (32768 on), so outgoing
    connections do not take them between this check and the broker's start.
    """
    for _ in range(200):
        base = random.randrange(low, high - count)
        if all(_bindable(port) for port in range(base, base + count)):
            return base
    raise BrokerError(f"found no {count} consecutive free ports between {low} and {high}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one that starts with ``-``: the storage tool would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise BrokerError("Java 17 or newer is needed to run Kafka; none found (JAVA_HOME, PATH)")
    return java


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_closed(node: BrokerNode, deadline: float) -> None:
    """Wait until nothing answers on the node's ports any more (or the deadline passes)."""
    while time.monotonic() < deadline and any(
        _port_open(node.host, port) for port in (node.port, node.controller_port)
    ):
        time.sleep(0.05)


def _answers(bootstrap: str, brokers: int = 1) -> bool:
    """True once the cluster answers a metadata request with ``brokers`` live brokers."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=3000)
    except KafkaError:
        return False
    try:
        live = [b for b in admin.describe_cluster().get("brokers", []) if not b.get("is_fenced")]
        return len(live) >= brokers
    except KafkaError:
        return False
    finally:
        admin.close()


def listener_port(properties_file: Path) -> int | None:
    """The client port a node's generated server.properties names (None: unknown)."""
    try:
        lines = properties_file.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("listeners="):
            for listener in line.split("=", 1)[1].split(","):
                if listener.startswith("PLAINTEXT://"):
                    port = listener.rsplit(":", 1)[-1]
                    return int(port) if port.isdigit() else None
    return None


def formatted_cluster_id(data_dir: Path) -> str | None:
    """The cluster id a node's storage was formatted with (None: not formatted)."""
    try:
        lines = (data_dir / "meta.properties").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("cluster.id="):
            return line.split("=", 1)[1].strip()
    return None


def cluster_id_at(bootstrap: str) -> str | None:
    """The cluster id of the Kafka answering at ``bootstrap`` (None: no answer)."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=3000)
    except KafkaError:
        return None
    try:
        answer = admin.describe_cluster().get("cluster_id")
        return str(answer) if answer else None
    except KafkaError:
        return None
    finally:
        admin.close()


def _is_our_broker(pid: int, properties_file: Path) -> bool:
    if not alive(pid):
        return False
    args = command_line(pid)
    if args is None:
        return True  # no /proc: trust the pid file
    return MAIN_CLASS.encode() in args and str(properties_file).encode() in args


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
