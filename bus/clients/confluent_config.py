"""librdkafka properties for the confluent-kafka driver: defaults, and the neutral options mapped.

`producer_config` and `consumer_config` turn the driver interface's options
(``transactional_id``, ``group_id``, ...) into librdkafka properties on top of the
settings' connection properties and the driver's defaults, and refuse what they
do not know.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from bus.settings import KafkaSettings
from core.errors import ConfigError

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.size": 1024 * 1024,
    "message.max.bytes": 1024 * 1024,  # the broker's default limit: larger fails at send()
    "queue.buffering.max.messages": 500_000,
    "delivery.report.only.error": True,
    "partitioner": "murmur2_random",  # a key goes where Java clients and kafka-python put it
    "reconnect.backoff.max.ms": 1000,  # back soon after a broker restart (default: 10 s)
}

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 8 * 1024 * 1024,
    "fetch.wait.max.ms": 100,
    "session.timeout.ms": 6_000,  # the broker's minimum: a dead member's partitions move soon
    "heartbeat.interval.ms": 1_500,
    "topic.metadata.refresh.interval.ms": 30_000,
    "enable.partition.eof": True,
    "reconnect.backoff.max.ms": 1000,
}
MAX_POLL_RECORDS = 5000

# neutral option -> librdkafka property
PRODUCER_OPTIONS = {
    "transactional_id": "transactional.id",
    "linger_ms": "linger.ms",
    "batch_size": "batch.size",
    "acks": "acks",
    "max_request_size": "message.max.bytes",
    "transaction_timeout_ms": "transaction.timeout.ms",
}
CONSUMER_OPTIONS = {
    "group_id": "group.id",
    "group_instance_id": "group.instance.id",
    "max_poll_records": None,  # the driver's own batch limit
    "fetch_max_wait_ms": "fetch.wait.max.ms",
    "read_committed": "isolation.level",
    "auto_offset_reset": "auto.offset.reset",
    "session_timeout_ms": "session.timeout.ms",
    "heartbeat_interval_ms": "heartbeat.interval.ms",
}
ACKS = {"all": "all", "-1": "all", -1: "all", "1": 1, 1: 1, "0": 0, 0: 0}
OFFSET_RESETS = ("earliest", "latest")
DEFAULT_TRANSACTION_TIMEOUT_MS = 60_000  # librdkafka's default


def _unknown(options: Mapping[str, Any], known: Mapping[str, Any], what: str) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown {what} option(s) {', '.join(unknown)}: expected some of {', '.join(known)}"
        )


def producer_config(settings: KafkaSettings, options: Mapping[str, Any]) -> dict[str, Any]:
    """librdkafka producer properties for the neutral ``options`` (without callbacks)."""
    _unknown(options, PRODUCER_OPTIONS, "producer")
    config = {
        **settings.librdkafka_config(),
        "request.timeout.ms": settings.request_timeout_ms,
        **PRODUCER_DEFAULTS,
    }
    for name, value in options.items():
        if value is not None:
            config[PRODUCER_OPTIONS[name]] = value
    if "acks" in options:
        if options["acks"] not in ACKS:
            raise ConfigError(f"producer option acks={options['acks']!r}: expected all, 1 or 0")
        config["acks"] = ACKS[options["acks"]]
        if config["acks"] != "all":
            if options.get("transactional_id"):
                raise ConfigError("a transactional producer needs acks=all")
            config["enable.idempotence"] = False  # idempotence needs acks=all
    if "transactional.id" in config:  # librdkafka: socket timeout <= transaction timeout + 100
        timeout = config.get("transaction.timeout.ms", DEFAULT_TRANSACTION_TIMEOUT_MS)
        config["socket.timeout.ms"] = min(config["socket.timeout.ms"], timeout + 100)
    return config


def consumer_config(settings: KafkaSettings, options: Mapping[str, Any]) -> dict[str, Any]:
    """librdkafka consumer properties for the neutral ``options`` (without callbacks).

    librdkafka needs a group id even for a consumer that only assigns partitions:
    one of its own is made up then (nothing is ever committed to it).
    """
    _unknown(options, CONSUMER_OPTIONS, "consumer")
    config = {**settings.librdkafka_config(), **CONSUMER_DEFAULTS}
    for name, value in options.items():
        prop = CONSUMER_OPTIONS[name]
        if value is None or prop is None:
            continue
        if name == "read_committed":
            config[prop] = "read_committed" if value else "read_uncommitted"
        elif name == "auto_offset_reset" and value not in OFFSET_RESETS:
            raise ConfigError(
                f"consumer option auto_offset_reset={value!r}: expected earliest or latest"
            )
        else:
            config[prop] = value
    if "group.id" not in config:
        if "group.instance.id" in config:
            raise ConfigError("consumer option group_instance_id needs a group_id")
        config["group.id"] = f"{settings.client_id}-unjoined-{uuid.uuid4().hex[:12]}"
    return config
