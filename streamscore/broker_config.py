"""Where the local broker keeps its jars and state, and the ports its nodes listen on.

The state folder is ``STREAMSCORE_HOME``: by default the checkout's ``.streamscore``
in a source checkout, else ``./.streamscore`` of the current directory (never a
folder inside the installed package). The broker's own files ship as package data.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bus.settings import LOCAL_PORT
from core.env import env_int, env_str
from core.errors import BrokerError, ConfigError

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
