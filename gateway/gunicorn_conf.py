"""gunicorn settings for ``gateway.app:get_app()``, from the gateway's config.

``streamscore gateway`` hands its resolved config (variables and flags) over in
``STREAMSCORE_GATEWAY_CONFIG``; without it (gunicorn started by hand) the
``STREAMSCORE_GATEWAY_*`` variables are read. Workers read it the same way.

The app is never preloaded: each worker builds it (and its Kafka clients and
threads) after the fork, and closes them when it exits, so that it leaves the
reply consumer group at once and its partitions move to the other workers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from core.logs import configure_logging
from gateway.config import WORKER_SLOT_VARIABLE, GatewayConfig, worker_slot

_config = GatewayConfig.from_env()

# Metrics of every worker in one scrape (gateway/metrics.py): each worker writes its
# series to files in this directory. Set before any worker imports prometheus_client.
# One per run, made here (or the one given, emptied of a previous run's files).
_METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
_made_metrics_dir = not os.environ.get(_METRICS_ENV)
if _made_metrics_dir:
    os.environ[_METRICS_ENV] = tempfile.mkdtemp(prefix="streamscore-gateway-metrics-")
else:
    for _stale in Path(os.environ[_METRICS_ENV]).glob("*.db"):
        _stale.unlink()

bind = [_config.bind]
workers = _config.workers
# gthread that hands a request to a thread only once it has all arrived, and answers
# gunicorn's own errors (400, 414, 431, ...) in JSON: see gateway/worker.py.
worker_class = "gateway.worker.GatewayWorker"
threads = _config.threads
preload_app = False
timeout = 30
graceful_timeout = 15
keepalive = 5
accesslog = "-" if _config.access_log else None
proc_name = "streamscore-gateway"
# gunicorn >= 25 opens a control socket at one per-user path by default: several
# gateways on one host would take it from each other. The gateway does not use it.
control_socket_disable = True


def post_fork(server: Any, worker: Any) -> None:
    """Log like the other services, and take the worker's slot (before it loads the app)."""
    configure_logging("gateway")
    os.environ[WORKER_SLOT_VARIABLE] = str(worker_slot(server.pid, worker.age))


def worker_exit(server: Any, worker: Any) -> None:
    """Close this worker's Kafka clients: leave the reply group, stop the threads."""
    from gateway.app import shutdown

    shutdown()


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its gauges leave the sums (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    """Remove the run's metrics directory if this run made it."""
    if _made_metrics_dir:
        shutil.rmtree(os.environ[_METRICS_ENV], ignore_errors=True)
