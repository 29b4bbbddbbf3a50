"""Metrics and health of a service: a small HTTP endpoint beside the service's loop.

Every long-running service (producer, trainer, scorer) serves, on a port of its
own, ``GET /metrics`` (Prometheus text format, from a `prometheus_client`
registry), ``GET /health/live`` and ``GET /health/ready`` (200 or 503 with a JSON
body that says why). The pieces:

- `Health`: liveness fails when the loop made no progress for ``stall_s`` while it
  had work waiting (a backlog > 0); readiness fails while a check says the service
  cannot do its job (no broker, no model yet). Clock and callables are given.
- `Watch`: a thread that reads something from the bus every few seconds (consumer
  lag, or just that the broker answers) and remembers the last answer or error.
- `TelemetryServer`: the threaded HTTP server on the standard library.

Series follow Prometheus conventions: the ``streamscore_`` prefix, ``_total`` for
counters, base units (``_seconds``). Nothing of the project is imported here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.env import env_float, env_int, env_str

log = logging.getLogger(__name__)

PREFIX = "streamscore_"
#: What `generate_latest` writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LIVE_PATH = "/health/live"
READY_PATH = "/health/ready"
METRICS_PATH = "/metrics"

#: Each service's port setting and default (the gateway serves /metrics on its own port).
PORTS = {
    "producer": ("STREAMSCORE_PRODUCER_METRICS_PORT", 9401),
    "trainer": ("STREAMSCORE_TRAINER_METRICS_PORT", 9402),
    "scorer": ("STREAMSCORE_SCORER_METRICS_PORT", 9403),
}
HOST_ENV = "STREAMSCORE_METRICS_HOST"
STALL_ENV = "STREAMSCORE_STALL_S"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_STALL_S = 60.0
#: How often a `Watch` reads the bus, and how old its last answer may be and still count.
WATCH_EVERY_S = 5.0
WATCH_STALE_S = 30.0


def version() -> str:
    """The installed streamscore version ("0+unknown" when not installed)."""
    try:
        return metadata.version("streamscore")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class TelemetryConfig:
    """Where a service serves its endpoint (port 0: nowhere) and when it counts as stalled."""

    service: str
    port: int
    host: str = DEFAULT_HOST
    stall_s: float = DEFAULT_STALL_S

    @classmethod
    def for_service(cls, service: str, env: Mapping[str, str]) -> TelemetryConfig:
        """From the service's port setting, ``STREAMSCORE_METRICS_HOST`` and ``_STALL_S``."""
        name, default = PORTS[service]
        return cls(
            service=service,
            port=env_int(env, name, default, minimum=0),
            host=env_str(env, HOST_ENV, DEFAULT_HOST),
            stall_s=env_float(env, STALL_ENV, DEFAULT_STALL_S, minimum=1.0),
        )


def port_env(service: str) -> str:
    """The variable that sets a service's metrics port."""
    return PORTS[service][0]


# --- health ----------------------------------------------------------------------------


class Health:
    """Liveness and readiness of one service's loop.

    ``progress()`` is a number that grows while the loop gets work done (e.g. the
    records it committed); ``backlog()`` is the work waiting (e.g. consumer lag;
    None: unknown). Live unless the backlog has stayed above 0 for ``stall_s``
    without ``progress()`` moving. ``checks`` return what keeps the service from
    doing its job (None: nothing): ready when none says anything. ``clock`` is in
    seconds (monotonic).
    """

    def __init__(
        self,
        *,
        stall_s: float,
        progress: Callable[[], float],
        backlog: Callable[[], int | None],
        checks: Iterable[Callable[[], str | None]] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stall_s = stall_s
        self._progress = progress
        self._backlog = backlog
        self._checks = list(checks)
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: float | None = None
        self._moved_at = clock()
        self._work_since: float | None = None

    def sample(self) -> float:
        """Note the progress and the backlog now; seconds the loop has been stalled with work."""
        now = self._clock()
        progress = self._progress()
        backlog = self._backlog()
        with self._lock:
            if progress != self._seen:
                self._seen = progress
                self._moved_at = now
            if backlog is None or backlog <= 0:
                self._work_since = None
                return 0.0
            if self._work_since is None:
                self._work_since = now
            return now - max(self._moved_at, self._work_since)

    def live(self) -> tuple[bool, str]:
        """(alive, why)."""
        stalled = self.sample()
        if stalled >= self.stall_s:
            return False, (
                f"no progress for {stalled:.0f} s with work waiting (backlog {self._backlog()}); "
                f"the limit is {self.stall_s:g} s ({STALL_ENV})"
            )
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """(ready, why)."""
        problems = [problem for check in self._checks if (problem := check()) is not None]
        if problems:
            return False, "; ".join(problems)
        return True, "ok"


class HealthCollector(Collector):
    """``streamscore_health{probe}`` (1 passing, 0 failing) and the stall in seconds."""

    def __init__(self, service: str, health: Health) -> None:
        self._service = service
        self._health = health

    def collect(self) -> Iterator[Metric]:
        """The health as series."""
        health = self._health
        probes = GaugeMetricFamily(
            PREFIX + "health", "1 when the probe passes, 0 when it fails", labels=["probe"]
        )
        probes.add_metric(["live"], float(health.live()[0]))
        probes.add_metric(["ready"], float(health.ready()[0]))
        yield probes
        stalled = GaugeMetricFamily(
            PREFIX + "stalled_seconds",
            "how long the loop has made no progress while work was waiting (0: moving or idle)",
        )
        stalled.add_metric([], health.sample())
        yield stalled


class BuildInfo(Collector):
    """``streamscore_build_info{version, service} 1``."""

    def __init__(self, service: str) -> None:
        self._service = service
        self._version = version()

    def collect(self) -> Iterator[Metric]:
        """One series."""
        info = GaugeMetricFamily(
            PREFIX + "build_info", "the running streamscore version", labels=["version", "service"]
        )
        info.add_metric([self._version, self._service], 1.0)
        yield info


# --- reading the bus now and then ------------------------------------------------------


class Watch(Collector):
    """Reads the bus every ``every_s`` on a thread of its own; keeps the last answer.

    ``read()`` returns the lag of each ``(group, topic, partition)`` (empty when
    there is nothing to measure: then it only shows that the broker answers); an
    exception is kept as the error. Exported as ``streamscore_consumer_lag``.
    """

    def __init__(
        self,
        read: Callable[[], Mapping[tuple[str, str, int], int]],
        *,
        every_s: float = WATCH_EVERY_S,
        stale_s: float = WATCH_STALE_S,
        clock: Callable[[], float] = time.monotonic,
        close: Callable[[], None] | None = None,
    ) -> None:
        self._read = read
        self._every_s = every_s
        self._stale_s = stale_s
        self._clock = clock
        self._close = close
        self._lock = threading.Lock()
        self._lag: dict[tuple[str, str, int], int] = {}
        self._read_at: float | None = None
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_read: list[Callable[[], None]] = []

    def poll(self) -> None:
        """Read once now."""
        try:
            lag = dict(self._read())
        except Exception as exc:  # whatever the bus says: kept, shown by readiness
            log.debug("reading the bus failed: %s", exc)
            with self._lock:
                self._error = f"{type(exc).__name__}: {exc}"
            return
        with self._lock:
            self._lag = lag
            self._read_at = self._clock()
            self._error = None
        for callback in self.on_read:
            callback()

    def start(self) -> Watch:
        """Read now, then every ``every_s`` on a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="telemetry-watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self._every_s)
        if self._close is not None:
            self._close()

    def close(self) -> None:
        """Stop the thread (it closes its clients)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def lag(self) -> dict[tuple[str, str, int], int]:
        """The last lag read, per (group, topic, partition)."""
        with self._lock:
            return dict(self._lag)

    def backlog(self, group: str | None = None) -> int | None:
        """The total lag (of ``group``, or of all); None when unknown or stale."""
        with self._lock:
            if self._read_at is None or self._clock() - self._read_at > self._stale_s:
                return None
            return sum(n for (g, _, _), n in self._lag.items() if group is None or g == group)

    def problem(self) -> str | None:
        """Why the bus cannot be read (None when a recent read succeeded)."""
        with self._lock:
            if self._read_at is not None and self._clock() - self._read_at <= self._stale_s:
                return None
            if self._error is not None:
                return f"the Kafka brokers cannot be read ({self._error})"
            return "the Kafka brokers have not answered yet"

    def collect(self) -> Iterator[Metric]:
        """``streamscore_consumer_lag{group, topic, partition}``."""
        family = GaugeMetricFamily(
            PREFIX + "consumer_lag",
            "records in a partition after the group's committed offset",
            labels=["group", "topic", "partition"],
        )
        for (group, topic, partition), lag in sorted(self.lag().items()):
            family.add_metric([group, topic, str(partition)], float(lag))
        yield family


class LagReader(Protocol):
    """What `lag_watch` needs of a consumer of a group (`bus.clients.base.Consumer` is one)."""

    def lag(self, topics: Sequence[str]) -> Mapping[Any, int]:
        """Lag per (topic, partition)."""
        ...

    def close(self) -> None:
        """Release the client."""
        ...


def lag_watch(
    reader_for: Callable[[str], LagReader],
    groups: Mapping[str, str],
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Watch:
    """A `Watch` of the lag of each group (group id -> topic), with a reader per group.

    A reader that fails is closed and made again at the next read.
    """
    readers: dict[str, LagReader] = {}

    def read() -> dict[tuple[str, str, int], int]:
        lag: dict[tuple[str, str, int], int] = {}
        for group, topic in groups.items():
            reader = readers.get(group)
            if reader is None:
                reader = readers[group] = reader_for(group)
            try:
                found = reader.lag([topic])
            except Exception:
                readers.pop(group).close()
                raise
            lag.update({(group, tp[0], int(tp[1])): n for tp, n in found.items()})
        return lag

    def close() -> None:
        while readers:
            readers.popitem()[1].close()

    return Watch(read, clock=clock, close=close)


# --- the endpoint ----------------------------------------------------------------------


class TelemetryServer:
    """``/metrics``, ``/health/live`` and ``/health/ready`` on a daemon thread.

    ``port`` 0 binds a free port (see `port` once started); services turn the
    endpoint off with a setting of 0 before they get here (see `serve`).
    """

    def __init__(self, registry: CollectorRegistry, health: Health, host: str, port: int) -> None:
        handler = _handler(registry, health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="telemetry-http", daemon=True
        )

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def start(self) -> TelemetryServer:
        """Serve on a daemon thread."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()


def _handler(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """Answers the three paths; 404 for anything else."""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == METRICS_PATH:
                self._send(200, CONTENT_TYPE, generate_latest(registry))
            elif path in (LIVE_PATH, READY_PATH):
                ok, why = health.live() if path == LIVE_PATH else health.ready()
                body = {"status": "ok" if ok else "failing", "reason": why}
                self._send(200 if ok else 503, "application/json", json.dumps(body).encode())
            else:
                body = {"error": f"no such path; try {METRICS_PATH}, {LIVE_PATH} or {READY_PATH}"}
                self._send(404, "application/json", json.dumps(body).encode())

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("telemetry: " + format, *args)

    return Handler


def serve(
    config: TelemetryConfig, registry: CollectorRegistry, health: Health
) -> TelemetryServer | None:
    """Start the endpoint, or None when its port is 0 or taken (a warning says which)."""
    if config.port == 0:
        log.info("%s: no metrics endpoint (%s=0)", config.service, port_env(config.service))
        return None
    try:
        server = TelemetryServer(registry, health, config.host, config.port).start()
    except OSError as exc:
        log.warning(
            "%s: cannot serve metrics on %s:%d (%s): running without them; set %s to a free "
            "port (or 0 for none)",
            config.service,
            config.host,
            config.port,
            exc,
            port_env(config.service),
        )
        return None
    log.info(
        "%s: metrics on http://%s:%d%s, health on %s and %s",
        config.service,
        config.host,
        server.port,
        METRICS_PATH,
        LIVE_PATH,
        READY_PATH,
    )
    return server


def registry_of(*collectors: Collector) -> CollectorRegistry:
    """A registry of its own (never the library's global one) holding ``collectors``."""
    registry = CollectorRegistry(auto_describe=True)
    for collector in collectors:
        registry.register(collector)
    return registry


# --- dead-letter reasons ---------------------------------------------------------------

#: Reason classes of dead letters, tried in order: (class, words of the reason that mark it).
REASON_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("too_large", ("too large", "RecordTooLargeError")),
    ("wrong_width", ("features, got", "features like the stream, got")),
    ("not_finite", ("not a finite", "finite number")),
    ("bad_model", ("unusable model", "signature", "ModelError")),
    ("bad_json", ("JSON", "json", "UTF-8", "utf-8", "decode")),
    ("missing_field", ("missing", "required")),
)
#: A reason that names no class above: the contract refused the record some other way.
OTHER_REASON = "invalid"


def reason_class(reason: str) -> str:
    """The class of a dead letter's reason (a label of bounded cardinality, never the text)."""
    for name, marks in REASON_CLASSES:
        if any(mark in reason for mark in marks):
            return name
    return OTHER_REASON
