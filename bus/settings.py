"""Kafka connection settings read from the environment, in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.env import env_int, env_str
from core.errors import ConfigError

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
#: The local development broker's host and default port (``STREAMSCORE_KAFKA_PORT``).
LOCAL_HOST = "127.0.0.1"
LOCAL_PORT = 9092
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
CLIENTS = ("kafka-python", "confluent")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")


@dataclass(frozen=True)
class KafkaSettings:
    """Where the cluster is and how to talk to it (security is passed through as is)."""

    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    client_id: str = "streamscore"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = field(default=None, repr=False)
    request_timeout_ms: int = 30_000
    client: str = "kafka-python"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSettings:
        """Read ``KAFKA_*`` variables; unset ones keep their defaults.

        Without ``KAFKA_BOOTSTRAP_SERVERS`` the clients talk to the local broker on
        its configured port (``STREAMSCORE_KAFKA_PORT``, the setting ``streamscore
        kafka up`` listens on), so every command finds the broker that was started.
        """
        env = os.environ if env is None else env
        protocol = env_str(env, "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
        if protocol not in SECURITY_PROTOCOLS:
            choices = ", ".join(SECURITY_PROTOCOLS)
            raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={protocol!r}: expected one of {choices}")
        mechanism = env_str(env, "KAFKA_SASL_MECHANISM", "") or None
        if mechanism is not None and mechanism.upper() not in SASL_MECHANISMS:
            raise ConfigError(
                f"KAFKA_SASL_MECHANISM={mechanism!r}: expected one of {', '.join(SASL_MECHANISMS)}"
            )
        if protocol.startswith("SASL") and mechanism is None:
            raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_MECHANISM")
        bootstrap = env_str(env, "KAFKA_BOOTSTRAP_SERVERS", "") or local_bootstrap(env)
        client = env_str(env, "STREAMSCORE_KAFKA_CLIENT", "kafka-python").lower()
        if client not in CLIENTS:
            raise ConfigError(
                f"STREAMSCORE_KAFKA_CLIENT={client!r}: expected one of {', '.join(CLIENTS)}"
            )
        return cls(
            bootstrap_servers=bootstrap,
            client_id=env_str(env, "KAFKA_CLIENT_ID", "streamscore"),
            security_protocol=protocol,
            sasl_mechanism=mechanism.upper() if mechanism else None,
            sasl_username=env.get("KAFKA_SASL_USERNAME") or None,
            sasl_password=env.get("KAFKA_SASL_PASSWORD") or None,
            ssl_cafile=env.get("KAFKA_SSL_CAFILE") or None,
            ssl_certfile=env.get("KAFKA_SSL_CERTFILE") or None,
            ssl_keyfile=env.get("KAFKA_SSL_KEYFILE") or None,
            ssl_password=env.get("KAFKA_SSL_PASSWORD") or None,
            request_timeout_ms=env_int(env, "KAFKA_REQUEST_TIMEOUT_MS", 30_000, minimum=1000),
            client=client,
        )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments every kafka-python client (producer, consumer, admin) takes."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_password": self.ssl_password,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        return kwargs

    def librdkafka_config(self) -> dict[str, Any]:
        """The same settings as librdkafka properties (confluent-kafka producer and consumer)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
            "socket.timeout.ms": self.request_timeout_ms,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_cafile,
            "ssl.certificate.location": self.ssl_certfile,
            "ssl.key.location": self.ssl_keyfile,
            "ssl.key.password": self.ssl_password,
        }
        config.update({k: v for k, v in optional.items() if v is not None})
        return config

    def secrets(self) -> list[str]:
        """The values no log may show (passwords), for the logging set-up to redact."""
        return [s for s in (self.sasl_password, self.ssl_password) if s]


def local_bootstrap(env: Mapping[str, str]) -> str:
    """The local broker's client address: loopback on ``STREAMSCORE_KAFKA_PORT`` (9092)."""
    port = env_int(env, "STREAMSCORE_KAFKA_PORT", LOCAL_PORT, minimum=1)
    if port > 65535:
        raise ConfigError(f"STREAMSCORE_KAFKA_PORT={port}: a TCP port is at most 65535")
    return f"{LOCAL_HOST}:{port}"
