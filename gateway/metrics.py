"""Prometheus metrics of the gateway: every gunicorn worker's, in one scrape.

The gateway runs under gunicorn with several worker processes; a scrape of
``/metrics`` reaches one of them. So the series live in `prometheus_client`'s
multiprocess mode: each worker writes its values to files in a directory of the
run (``PROMETHEUS_MULTIPROC_DIR``, made by ``gateway/gunicorn_conf.py``, which
also marks a dead worker's files), and whichever worker answers a scrape adds
every worker's files up. Counters keep the counts of workers that exited, so a
request counter never goes back. Without that variable (tests, a plain
``create_app``) the series are this process's alone.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import astuple
from typing import Any

import falcon
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from bus.reply import ReplyStats
from core import telemetry

CONTENT_TYPE = telemetry.CONTENT_TYPE
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PREFIX = "streamscore_gateway_"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The bus client's counters: (ReplyStats field, series name without _total, help).
BUS_COUNTERS = (
    ("sent", "bus_requests", "requests published to the bus"),
    ("replies", "bus_replies", "replies delivered to a waiting request"),
    ("timeouts", "bus_timeouts", "requests with no reply in time"),
    ("late_replies", "late_replies", "replies dropped: nobody waits for them (late, or moved)"),
    ("rejected", "rejected", "requests refused because too many were pending"),
)


def multiprocess_dir() -> str | None:
    """The directory of the run's per-worker files, or None (this process alone)."""
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """Request counts and latencies by route and status, and the bus client's counters."""

    def __init__(
        self,
        bus_stats: Callable[[], ReplyStats] | None = None,
        *,
        buckets: tuple[float, ...] = BUCKETS,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.bus_stats = bus_stats
        self.timer = timer
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._requests = Counter(
            PREFIX + "requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self._latency = Histogram(
            PREFIX + "request_duration_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=buckets,
            registry=registry,
        )
        self._bus = {
            field: Counter(PREFIX + name, text, registry=registry)
            for field, name, text in BUS_COUNTERS
        }
        self._pending = Gauge(
            PREFIX + "pending_requests",
            "requests waiting for a reply (all live workers, as of each one's last answer)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._partitions = Gauge(
            PREFIX + "reply_partitions",
            "reply partitions owned (all live workers)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        info = Gauge(
            "streamscore_build_info",
            "the running streamscore version",
            ["version", "service"],
            registry=registry,
            multiprocess_mode="max",
        )
        info.labels(telemetry.version(), "gateway").set(1)
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        self._requests.labels(route, method, str(status)).inc()
        self._latency.labels(route).observe(seconds)

    def refresh(self) -> None:
        """Bring the bus client's counters of this worker up to date."""
        if self.bus_stats is None:
            return
        stats = self.bus_stats()
        values = dict(zip(ReplyStats.__dataclass_fields__, astuple(stats), strict=True))
        with self._lock:
            for field, counter in self._bus.items():
                delta = values[field] - self._seen.get(field, 0)
                if delta > 0:
                    counter.inc(delta)
                    self._seen[field] = values[field]
            self._pending.set(stats.pending)
            self._partitions.set(stats.partitions)

    def render(self) -> str:
        """Every series in the Prometheus text format (every worker's, in multiprocess mode)."""
        self.refresh()
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry).decode()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry).decode()


class MetricsMiddleware:
    """Times every request and counts it under its route template (``/v2/models/{name}``)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Note the start time."""
        req.context.started = self.metrics.timer()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        """Count the answer (and bring the bus counters up to date)."""
        started = getattr(req.context, "started", None)
        if started is None:
            return
        route = req.uri_template or "unmatched"
        self.metrics.observe(route, req.method, resp.status_code, self.metrics.timer() - started)
        self.metrics.refresh()
