"""The container image's health check: one image runs every service, so it asks what runs.

A container that serves the gateway (a gunicorn serving ``gateway.app``) is healthy
when ``GET /v2/health/live`` answers 200 on its bind address
(``STREAMSCORE_GATEWAY_BIND``: ``HOST:PORT`` or ``unix:PATH``). The producer, the
trainer and the scorer serve ``/health/live`` on their metrics port
(``STREAMSCORE_<SERVICE>_METRICS_PORT``): it fails when the loop has made no progress
for ``STREAMSCORE_STALL_S`` while work waits. ``--ready`` asks ``/health/ready``
instead (the broker answers; for the scorer, a model is loaded). A container with
none of these (the one-shot ``topics``) passes.

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
SERVICE_LIVE = "/health/live"
SERVICE_READY = "/health/ready"
#: The services with a health endpoint: the word in their command line, port setting, default.
SERVICES = {
    "producer": ("STREAMSCORE_PRODUCER_METRICS_PORT", 9401),
    "trainer": ("STREAMSCORE_TRAINER_METRICS_PORT", 9402),
    "scorer": ("STREAMSCORE_SCORER_METRICS_PORT", 9403),
}
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


def running_service(proc: Path = Path("/proc")) -> str | None:
    """Which of `SERVICES` a ``streamscore <service>`` process of this container runs."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(w.endswith(b"streamscore") for w in words[:2]):
            for name in SERVICES:
                if name.encode() in words:
                    return name
    return None


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


def gateway_live(bind: str, timeout: float = TIMEOUT_S, path: str = LIVE_PATH) -> bool:
    """True when the server bound to ``bind`` answers ``GET path`` with 200."""
    host, port = local_address(bind)
    connection: http.client.HTTPConnection
    if host == "unix":
        connection = _UnixConnection(str(port), timeout)
    else:
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def service_healthy(service: str, *, ready: bool, env: dict[str, str]) -> str | None:
    """None when the service's probe answers 200; else what failed."""
    name, default = SERVICES[service]
    port = int(env.get(name, "").strip() or default)
    if port == 0:
        return None  # no endpoint: alive while it runs
    path = SERVICE_READY if ready else SERVICE_LIVE
    if gateway_live(f"127.0.0.1:{port}", path=path):
        return None
    return f"{service} on port {port}: GET {path} did not answer 200"


def main(argv: list[str] | None = None) -> int:
    """0 when healthy, 1 when not."""
    args = sys.argv[1:] if argv is None else argv
    ready = "--ready" in args
    service = running_service()
    if service is not None:
        problem = service_healthy(service, ready=ready, env=dict(os.environ))
        if problem is not None:
            print(problem, file=sys.stderr)
            return 1
        return 0
    if not serves_gateway():
        return 0
    from gateway.config import GatewayConfig  # the bind address, read as the gateway reads it

    bind = GatewayConfig.from_env(os.environ).bind
    path = "/v2/health/ready" if ready else LIVE_PATH
    if gateway_live(bind, path=path):
        return 0
    print(f"gateway on {bind}: GET {path} did not answer 200", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
