"""The gateway's settings: a frozen dataclass read from ``STREAMSCORE_GATEWAY_*``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.settings import Setting, SettingsTable, boolean, integer

DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_MODEL_HISTORY = 10

#: The whole resolved configuration as one JSON object, from ``streamscore gateway``
#: (its variables and flags) to gunicorn and its workers. When set, it is the config.
RESOLVED_VARIABLE = "STREAMSCORE_GATEWAY_CONFIG"

#: The slot gunicorn_conf gives each worker; its replies partition is the slot modulo
#: the partition count (`bus.reply`). Set in the worker's own environment only.
WORKER_SLOT_VARIABLE = "STREAMSCORE_GATEWAY_WORKER_SLOT"


def worker_slot(master_pid: int, age: int) -> int:
    """The slot of a gunicorn worker: its master's pid plus its age (gunicorn's count).

    The workers of one gunicorn get consecutive slots, so each reads a replies
    partition of its own (while no more of them live than there are partitions);
    another gunicorn's master pid shifts its workers' slots elsewhere.
    """
    return master_pid + age


@dataclass(frozen=True)
class GatewayConfig:
    """How gunicorn serves the gateway, and how long and how much each worker waits."""

    bind: str = DEFAULT_BIND
    workers: int = 4
    threads: int = 16
    timeout_ms: int = 5000
    max_pending: int = 1000
    max_body_bytes: int = 1_000_000
    async_ttl_ms: int = 600_000
    client_timeout_ms: int = 30_000
    access_log: bool = False
    #: Versions of each model the scorer keeps loaded (``STREAMSCORE_MODEL_HISTORY``,
    #: the scorer's setting too): the catalogue lists exactly these.
    model_history: int = DEFAULT_MODEL_HISTORY

    def __post_init__(self) -> None:
        SETTINGS.check(self)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None
    ) -> GatewayConfig:
        """Read ``STREAMSCORE_GATEWAY_*`` (``overrides``: field -> text on top).

        In the processes ``streamscore gateway`` starts, the resolved config it hands
        over in ``STREAMSCORE_GATEWAY_CONFIG`` (`dumps`) is the config.
        """
        return SETTINGS.load_handed_over(RESOLVED_VARIABLE, env, overrides)

    def dumps(self) -> str:
        """This config as the value of ``STREAMSCORE_GATEWAY_CONFIG``."""
        return SETTINGS.dumps(self)

    @property
    def timeout_s(self) -> float:
        """The reply timeout in seconds."""
        return self.timeout_ms / 1000

    @property
    def client_timeout_s(self) -> float:
        """How long a client may take to send one whole request, in seconds."""
        return self.client_timeout_ms / 1000


def _bind(text: str) -> str:
    if text.startswith("unix:") or ":" in text:
        return text
    raise ValueError("expected HOST:PORT (e.g. 0.0.0.0:8000) or unix:PATH")


#: The settings, in the order ``--help`` and the README list them.
SETTINGS = SettingsTable(
    GatewayConfig,
    "STREAMSCORE_GATEWAY_",
    [
        Setting("bind", "STREAMSCORE_GATEWAY_BIND", _bind,
                "where gunicorn listens: HOST:PORT or unix:PATH", "HOST:PORT"),
        Setting("workers", "STREAMSCORE_GATEWAY_WORKERS", integer(minimum=1),
                "gunicorn worker processes", "N"),
        Setting("threads", "STREAMSCORE_GATEWAY_THREADS", integer(minimum=1),
                "threads per worker", "N"),
        Setting("timeout_ms", "STREAMSCORE_GATEWAY_TIMEOUT_MS", integer(minimum=1),
                "how long to wait for a reply before 504", "MS"),
        Setting("max_pending", "STREAMSCORE_GATEWAY_MAX_PENDING", integer(minimum=1),
                "requests waiting for replies per worker before 503", "N"),
        Setting("max_body_bytes", "STREAMSCORE_GATEWAY_MAX_BODY_BYTES", integer(minimum=1),
                "larger bodies get 413", "BYTES"),
        Setting("async_ttl_ms", "STREAMSCORE_GATEWAY_ASYNC_TTL_MS", integer(minimum=1000),
                "how long an asynchronous result can be fetched", "MS"),
        Setting("client_timeout_ms", "STREAMSCORE_GATEWAY_CLIENT_TIMEOUT_MS",
                integer(minimum=100), "how long a client may take to send a whole request "
                "before 408", "MS"),
        Setting("access_log", "STREAMSCORE_GATEWAY_ACCESS_LOG", boolean(),
                "gunicorn access log on stdout"),
        Setting("model_history", "STREAMSCORE_MODEL_HISTORY", integer(minimum=1),
                "versions of each model listed (set it as the scorer's)", "N"),
    ],
)  # fmt: skip
