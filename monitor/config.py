"""The monitor's settings: a frozen dataclass read from ``STREAMSCORE_MONITOR_*``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.settings import Setting, SettingsTable, integer, number

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5555

#: The whole resolved configuration as one JSON object, from ``streamscore monitor``
#: (its variables and flags) to gunicorn and its worker. When set, it is the config.
RESOLVED_VARIABLE = "STREAMSCORE_MONITOR_CONFIG"


@dataclass(frozen=True)
class MonitorConfig:
    """Where the dashboard listens, how often it refreshes and how much history it keeps."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    refresh_ms: int = 2000
    deadletters: int = 50
    scores_tail: int = 2000
    history: int = 500
    requests_tail: int = 2000
    groups_every_s: float = 2.0
    threads: int = 4

    def __post_init__(self) -> None:
        SETTINGS.check(self)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None
    ) -> MonitorConfig:
        """Read ``STREAMSCORE_MONITOR_*`` (``overrides``: field -> text on top).

        In the processes ``streamscore monitor`` starts, the resolved config it hands
        over in ``STREAMSCORE_MONITOR_CONFIG`` (`dumps`) is the config.
        """
        return SETTINGS.load_handed_over(RESOLVED_VARIABLE, env, overrides)

    def dumps(self) -> str:
        """This config as the value of ``STREAMSCORE_MONITOR_CONFIG``."""
        return SETTINGS.dumps(self)

    @property
    def bind(self) -> str:
        """HOST:PORT for gunicorn."""
        return f"{self.host}:{self.port}"


def _host(value: str) -> str:
    """A host name or address without a port (an IPv6 address in brackets)."""
    if not value:
        raise ValueError("expected a host name or address, e.g. 127.0.0.1")
    if ":" in value and not (value.startswith("[") and value.endswith("]")):
        raise ValueError(
            "expected a host name or address without a port, e.g. 127.0.0.1 or [::1] "
            "(set the port with --port / STREAMSCORE_MONITOR_PORT)"
        )
    return value


#: The settings, in the order ``--help`` and the README list them.
SETTINGS = SettingsTable(
    MonitorConfig,
    "STREAMSCORE_MONITOR_",
    [
        Setting("host", "STREAMSCORE_MONITOR_HOST", _host,
                "address to listen on; the monitor has no authentication: keep it on "
                "loopback or behind a proxy that has", "HOST"),
        Setting("port", "STREAMSCORE_MONITOR_PORT", integer(minimum=1, maximum=65535),
                "port to listen on", "PORT"),
        Setting("refresh_ms", "STREAMSCORE_MONITOR_REFRESH_MS", integer(minimum=200),
                "how often the page refreshes", "MS"),
        Setting("deadletters", "STREAMSCORE_MONITOR_DEADLETTERS", integer(minimum=1),
                "dead letters kept (and read back at start)", "N"),
        Setting("scores_tail", "STREAMSCORE_MONITOR_SCORES_TAIL", integer(minimum=1),
                "scores records per partition read at start", "N"),
        Setting("history", "STREAMSCORE_MONITOR_HISTORY", integer(minimum=2),
                "points kept per model version", "N"),
        Setting("requests_tail", "STREAMSCORE_MONITOR_REQUESTS_TAIL", integer(minimum=1),
                "requests/replies records per partition read at start", "N"),
        Setting("groups_every_s", "STREAMSCORE_MONITOR_GROUPS_EVERY_S", number(minimum=0.2),
                "how often groups, topics and the newest predictions are sampled", "S"),
        Setting("threads", "STREAMSCORE_MONITOR_THREADS", integer(minimum=1),
                "threads answering the page and its API", "N"),
    ],
)  # fmt: skip
