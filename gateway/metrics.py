"""Prometheus metrics of one gateway worker, in the text exposition format.

Each gunicorn worker counts what it answered itself; every series carries a
``worker`` label (the process id), and a scrape of ``/metrics`` is answered by
whichever worker accepts it. So counters never appear to go backwards (each
worker is its own series) and ``sum by (route, status) (rate(...[5m]))`` adds
the workers up; run one worker with more threads when exact per-scrape totals
matter. No dependency: a dozen series do not need a client library.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import falcon

from bus.reply import ReplyStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PREFIX = "streamscore_gateway_"
PER_WORKER = " (this gunicorn worker only; see the worker label)"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


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
        self.buckets = buckets
        self.timer = timer
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        self._latency: dict[str, list[float]] = {}  # route -> bucket counts + [sum, count]

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        with self._lock:
            key = (route, method, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            row = self._latency.setdefault(route, [0.0] * (len(self.buckets) + 2))
            row[bisect.bisect_left(self.buckets, seconds)] += 1
            row[-2] += seconds
            row[-1] += 1

    def render(self) -> str:
        """Every metric in the Prometheus text format."""
        worker = str(os.getpid())
        out: list[str] = []

        def family(name: str, kind: str, text: str) -> None:
            out.append(f"# HELP {PREFIX}{name} {text}{PER_WORKER}")
            out.append(f"# TYPE {PREFIX}{name} {kind}")

        with self._lock:
            requests = sorted(self._requests.items())
            latency = sorted((route, list(row)) for route, row in self._latency.items())
        family("requests_total", "counter", "HTTP requests answered, by route, method and status")
        for (route, method, status), count in requests:
            labels = _labels(worker=worker, route=route, method=method, status=status)
            out.append(f"{PREFIX}requests_total{labels} {count}")
        family("request_duration_seconds", "histogram", "HTTP request latency by route")
        for route, row in latency:
            cumulative = 0.0
            for bound, in_bucket in zip((*self.buckets, float("inf")), row, strict=False):
                cumulative += in_bucket
                le = "+Inf" if bound == float("inf") else repr(bound)
                labels = _labels(worker=worker, route=route, le=le)
                out.append(f"{PREFIX}request_duration_seconds_bucket{labels} {int(cumulative)}")
            labels = _labels(worker=worker, route=route)
            out.append(f"{PREFIX}request_duration_seconds_sum{labels} {row[-2]!r}")
            out.append(f"{PREFIX}request_duration_seconds_count{labels} {int(row[-1])}")
        if self.bus_stats is not None:
            stats = self.bus_stats()
            labels = _labels(worker=worker)
            bus: list[tuple[str, str, str, int]] = [
                ("pending_requests", "gauge", "requests waiting for a reply", stats.pending),
                ("bus_requests_total", "counter", "requests published", stats.sent),
                ("bus_replies_total", "counter", "replies delivered to a waiter", stats.replies),
                ("bus_timeouts_total", "counter", "requests with no reply in time", stats.timeouts),
                (
                    "late_replies_total",
                    "counter",
                    "replies dropped: nobody here waits for them (late, or moved by a rebalance)",
                    stats.late_replies,
                ),
                (
                    "rejected_total",
                    "counter",
                    "requests refused because too many were pending",
                    stats.rejected,
                ),
                ("reply_partitions", "gauge", "reply partitions owned", stats.partitions),
            ]
            for name, kind, text, value in bus:
                family(name, kind, text)
                out.append(f"{PREFIX}{name}{labels} {value}")
        return "\n".join(out) + "\n"


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
        """Count the answer."""
        started = getattr(req.context, "started", None)
        if started is None:
            return
        route = req.uri_template or "unmatched"
        self.metrics.observe(route, req.method, resp.status_code, self.metrics.timer() - started)
