"""The chaos suite's own Kafka: one node or a cluster of three, in a folder of its own.

Started on free ports with the project's launcher (`streamscore.broker`), sharing
only the jar cache, so no broker anyone else uses is ever touched. Faults are
done here: a node killed (SIGKILL) and started again, a clean stop and start, the
leader of a partition found and killed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from kafka.errors import KafkaError

from bus.clients import make_admin
from bus.settings import KafkaSettings
from core.errors import BusError
from streamscore.broker import BrokerConfig, BrokerStatus, LocalBroker, free_port_range

log = logging.getLogger(__name__)

HEAP = "512m"
#: Starting a JVM on a busy machine of two cores can take a minute or more.
START_TIMEOUT_S = 240.0


class ChaosBrokers:
    """A broker (``brokers=1``) or a local cluster started for the suite, in ``home``."""

    def __init__(self, home: Path, brokers: int) -> None:
        base = free_port_range(2 * brokers)
        self.config = replace(
            BrokerConfig.from_env({}),
            home=home,
            cache_dir=BrokerConfig.from_env().cache_dir,  # the jars this machine already has
            port=base,
            controller_port=base + brokers,
            heap=HEAP,
            brokers=brokers,
            start_timeout_s=START_TIMEOUT_S,
        )
        self.broker = LocalBroker(self.config)

    @property
    def bootstrap(self) -> str:
        """Every node's client address."""
        return self.config.bootstrap

    @property
    def brokers(self) -> int:
        """How many nodes."""
        return self.config.brokers

    def settings(self) -> KafkaSettings:
        """Client settings pointing at these brokers."""
        return replace(KafkaSettings.from_env({}), bootstrap_servers=self.bootstrap)

    def up(self) -> BrokerStatus:
        """Start every node that is not running; wait until all answer."""
        started = time.monotonic()
        status = self.broker.up()
        log.info("%s (%.1f s)", status.describe(), time.monotonic() - started)
        return status

    def kill(self, node_id: int = 1) -> float:
        """SIGKILL one node; the time it died."""
        pid = self.broker.kill(node_id)
        if pid is None:
            raise BusError(f"kafka node {node_id} was not running; it cannot be killed")
        log.info("killed kafka node %d (pid %d)", node_id, pid)
        return time.time()

    def down(self) -> None:
        """Stop every node cleanly."""
        self.broker.down()

    def leader_of(self, topic: str, partition: int) -> int:
        """The node id that leads ``partition`` of ``topic`` right now."""
        admin = make_admin(self.settings())
        try:
            described = admin.describe_topics([topic])
        except KafkaError as exc:
            raise BusError(f"cannot describe {topic!r}: {exc}") from exc
        finally:
            admin.close()
        for info in described[0]["partitions"] if described else ():
            if info["partition_index"] == partition and info["leader_id"] >= 0:
                return int(info["leader_id"])
        raise BusError(f"{topic!r} partition {partition} has no leader now")

    def stop(self) -> None:
        """Stop every node (their data and logs stay in the home)."""
        self.broker.down()
