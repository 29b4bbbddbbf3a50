"""gunicorn settings for ``monitor.app:get_app()``, from the monitor's config.

``streamscore monitor`` hands its resolved config (variables and flags) over in
``STREAMSCORE_MONITOR_CONFIG``; without it (gunicorn started by hand) the
``STREAMSCORE_MONITOR_*`` variables are read. The worker reads it the same way.

One worker: the dashboard is in-memory state, fed by the worker's own threads;
a few threads answer the page and its API. The app is built after the fork.
"""

from __future__ import annotations

from typing import Any

from core.logs import configure_logging
from monitor.config import MonitorConfig

_config = MonitorConfig.from_env()

bind = [_config.bind]
workers = 1
worker_class = "gthread"
threads = _config.threads
preload_app = False
timeout = 30
graceful_timeout = 10
keepalive = 5
accesslog = None
proc_name = "streamscore-monitor"
control_socket_disable = True


def post_fork(server: Any, worker: Any) -> None:
    """Log like the other services (in the worker, before it loads the app)."""
    configure_logging("monitor")


def worker_exit(server: Any, worker: Any) -> None:
    """Stop the worker's feed threads and close their Kafka clients."""
    from monitor.app import shutdown

    shutdown()
