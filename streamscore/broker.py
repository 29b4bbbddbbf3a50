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

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from core.errors import BrokerError
from streamscore.broker_config import (
    CLUSTER_MIN_INSYNC,
    CLUSTER_REPLICATION,
    KAFKA_FILES,
    MAIN_CLASS,
    MAX_BROKERS,
    PROJECT_ROOT,
    BrokerConfig,
    BrokerNode,
    default_home,
    kafka_file,
    started_size,
)
from streamscore.broker_ports import (
    find_java,
    formatted_cluster_id,
    free_port,
    free_port_range,
    is_our_broker,
    listener_port,
    new_cluster_id,
    port_open,
    tail,
    wait_closed,
)
from streamscore.processes import alive

__all__ = [
    "CLUSTER_MIN_INSYNC",
    "CLUSTER_REPLICATION",
    "KAFKA_FILES",
    "MAIN_CLASS",
    "MAX_BROKERS",
    "PROJECT_ROOT",
    "BrokerConfig",
    "BrokerNode",
    "BrokerStatus",
    "LocalBroker",
    "NodeStatus",
    "answers",
    "cluster_id_at",
    "default_home",
    "formatted_cluster_id",
    "free_port",
    "free_port_range",
    "kafka_file",
    "listener_port",
    "new_cluster_id",
    "started_size",
]

log = logging.getLogger(__name__)


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
        if not port_open(node.host, node.port):
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
        if is_our_broker(pid, node.properties_file):
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
            pid = self._live_pid(single.nodes[0])  # the node a single-node broker would use
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
                if port_open(node.host, port):
                    raise BrokerError(
                        f"port {port} on {node.host} is taken by another process; stop it or "
                        "choose other ports with STREAMSCORE_KAFKA_PORT / "
                        "STREAMSCORE_KAFKA_CONTROLLER_PORT"
                    )
        processes: dict[int, subprocess.Popen[bytes]] = {}
        if stopped:
            java = find_java()
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
            wait_closed(node, deadline=time.monotonic() + 10)
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
        while alive(pid) or port_open(node.host, node.port):
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
                        + tail(node.log_file)
                    )
            if all(port_open(node.host, node.port) for node in nodes) and answers(
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
        cluster_id = self.new_cluster_id()
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

    def new_cluster_id(self) -> str:
        if self.config.brokers == 1:
            return new_cluster_id()
        try:
            return self.config.cluster_id_file.read_text().strip()
        except FileNotFoundError:
            cluster_id = new_cluster_id()
            self.config.cluster_id_file.parent.mkdir(parents=True, exist_ok=True)
            self.config.cluster_id_file.write_text(f"{cluster_id}\n")
            return cluster_id


def answers(bootstrap: str, brokers: int = 1) -> bool:
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
