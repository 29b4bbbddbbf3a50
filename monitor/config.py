"""The monitor's settings, read from the environment once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from core.env import env_float, env_int, env_str
from core.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5555


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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MonitorConfig:
        """Read ``STREAMSCORE_MONITOR_*``; see the README's Monitor section."""
        env = os.environ if env is None else env
        port = env_int(env, "STREAMSCORE_MONITOR_PORT", cls.port, minimum=1)
        if port > 65535:
            raise ConfigError(f"STREAMSCORE_MONITOR_PORT={port}: expected a port, 1 to 65535")
        host = env_str(env, "STREAMSCORE_MONITOR_HOST", cls.host)
        if ":" in host and not host.startswith("["):
            raise ConfigError(
                f"STREAMSCORE_MONITOR_HOST={host!r}: expected a host name or address without "
                "a port (set the port with STREAMSCORE_MONITOR_PORT)"
            )
        return cls(
            host=host,
            port=port,
            refresh_ms=env_int(env, "STREAMSCORE_MONITOR_REFRESH_MS", cls.refresh_ms, minimum=200),
            deadletters=env_int(env, "STREAMSCORE_MONITOR_DEADLETTERS", cls.deadletters, minimum=1),
            scores_tail=env_int(env, "STREAMSCORE_MONITOR_SCORES_TAIL", cls.scores_tail, minimum=1),
            history=env_int(env, "STREAMSCORE_MONITOR_HISTORY", cls.history, minimum=2),
            requests_tail=env_int(
                env, "STREAMSCORE_MONITOR_REQUESTS_TAIL", cls.requests_tail, minimum=1
            ),
            groups_every_s=env_float(
                env, "STREAMSCORE_MONITOR_GROUPS_EVERY_S", cls.groups_every_s, minimum=0.2
            ),
            threads=env_int(env, "STREAMSCORE_MONITOR_THREADS", cls.threads, minimum=1),
        )

    @property
    def bind(self) -> str:
        """HOST:PORT for gunicorn."""
        return f"{self.host}:{self.port}"
