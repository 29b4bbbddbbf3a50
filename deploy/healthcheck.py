"""The container image's health check: one image runs every service, so it asks what runs.

A container that serves the gateway (a gunicorn serving ``gateway.app``) is healthy
when ``GET /v2/health/live`` answers 200 on its bind address
(``STREAMSCORE_GATEWAY_BIND``: ``HOST:PORT`` or ``unix:PATH``). The other services
(producer, trainer, scorer, topics) have no endpoint: they are alive while they run,
exit non-zero on a fatal error (the restart policy brings them back), and their real
health is consumer lag (``streamscore status``). So for them the check passes.

It runs as ``python /opt/streamscore/healthcheck.py`` with the image's virtualenv, and
exits 0 when healthy, 1 when not (the Docker HEALTHCHECK convention).
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
from pathlib import Path

LIVE_PATH = "/v2/health/live"
TIMEOUT_S = 3.0
#: A gunicorn whose command line holds one of these serves the gateway: the app it
#: loads, or the process title gunicorn sets (``proc_name``) when setproctitle is there.
GATEWAY_MARKERS = (b"gateway.app", b"streamscore-gateway")


def serves_gateway(proc: Path = Path("/proc")) -> bool:
    """True when a process of this container (its PID namespace) is the gateway's gunicorn."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if b"gunicorn" in command and any(marker in command for marker in GATEWAY_MARKERS):
            return True
    return False


def local_address(bind: str) -> tuple[str, str | int]:
    """Where to reach a server bound to ``bind``: ``("unix", path)`` or ``(host, port)``.

    A wildcard host (``0.0.0.0``, ``::``, empty) is reached on the loopback address.
    """
    if bind.startswith("unix:"):
        return "unix", bind.removeprefix("unix:")
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (``STREAMSCORE_GATEWAY_BIND=unix:/path``)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


def gateway_live(bind: str, timeout: float = TIMEOUT_S) -> bool:
    """True when the gateway bound to ``bind`` answers ``GET /v2/health/live`` with 200."""
    host, port = local_address(bind)
    connection: http.client.HTTPConnection
    if host == "unix":
        connection = _UnixConnection(str(port), timeout)
    else:
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("GET", LIVE_PATH)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def main() -> int:
    """0 when healthy, 1 when not."""
    if not serves_gateway():
        return 0
    from gateway.config import GatewayConfig  # the bind address, read as the gateway reads it

    bind = GatewayConfig.from_env(os.environ).bind
    if gateway_live(bind):
        return 0
    print(f"gateway on {bind}: GET {LIVE_PATH} did not answer 200", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
