"""The gateway's settings, read from the environment once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from core.env import env_bool, env_int, env_str
from core.errors import ConfigError

DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_MODEL_HISTORY = 10


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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig:
        """Read ``STREAMSCORE_GATEWAY_*``; see the README's settings table."""
        env = os.environ if env is None else env
        bind = env_str(env, "STREAMSCORE_GATEWAY_BIND", cls.bind)
        if not bind.startswith("unix:") and ":" not in bind:
            raise ConfigError(
                f"STREAMSCORE_GATEWAY_BIND={bind!r}: expected HOST:PORT (e.g. 0.0.0.0:8000) "
                "or unix:PATH"
            )
        return cls(
            bind=bind,
            workers=env_int(env, "STREAMSCORE_GATEWAY_WORKERS", cls.workers, minimum=1),
            threads=env_int(env, "STREAMSCORE_GATEWAY_THREADS", cls.threads, minimum=1),
            timeout_ms=env_int(env, "STREAMSCORE_GATEWAY_TIMEOUT_MS", cls.timeout_ms, minimum=1),
            max_pending=env_int(env, "STREAMSCORE_GATEWAY_MAX_PENDING", cls.max_pending, minimum=1),
            max_body_bytes=env_int(
                env, "STREAMSCORE_GATEWAY_MAX_BODY_BYTES", cls.max_body_bytes, minimum=1
            ),
            async_ttl_ms=env_int(
                env, "STREAMSCORE_GATEWAY_ASYNC_TTL_MS", cls.async_ttl_ms, minimum=1000
            ),
            client_timeout_ms=env_int(
                env, "STREAMSCORE_GATEWAY_CLIENT_TIMEOUT_MS", cls.client_timeout_ms, minimum=100
            ),
            access_log=env_bool(env, "STREAMSCORE_GATEWAY_ACCESS_LOG", cls.access_log),
            model_history=env_int(env, "STREAMSCORE_MODEL_HISTORY", cls.model_history, minimum=1),
        )

    @property
    def timeout_s(self) -> float:
        """The reply timeout in seconds."""
        return self.timeout_ms / 1000

    @property
    def client_timeout_s(self) -> float:
        """How long a client may take to send one whole request, in seconds."""
        return self.client_timeout_ms / 1000
