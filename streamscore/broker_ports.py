"""Probes of the local broker's surroundings: free ports, open ports, its files and process.

Nothing here talks Kafka: these read sockets, /proc and the files a started node leaves.
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import socket
import time
import uuid
from pathlib import Path

from core.errors import BrokerError
from streamscore.broker_config import MAIN_CLASS, BrokerNode
from streamscore.processes import alive, command_line


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


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one that starts with ``-``: the storage tool would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def find_java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise BrokerError("Java 17 or newer is needed to run Kafka; none found (JAVA_HOME, PATH)")
    return java


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_closed(node: BrokerNode, deadline: float) -> None:
    """Wait until nothing answers on the node's ports any more (or the deadline passes)."""
    while time.monotonic() < deadline and any(
        port_open(node.host, port) for port in (node.port, node.controller_port)
    ):
        time.sleep(0.05)


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


def is_our_broker(pid: int, properties_file: Path) -> bool:
    if not alive(pid):
        return False
    args = command_line(pid)
    if args is None:
        return True  # no /proc: trust the pid file
    return MAIN_CLASS.encode() in args and str(properties_file).encode() in args


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
