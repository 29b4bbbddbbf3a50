"""kafka-python arguments for the kafka-python driver: defaults, and the neutral options mapped.

`producer_config` and `consumer_config` turn the driver interface's options
(``transactional_id``, ``group_id``, ...) into ``KafkaProducer`` / ``KafkaConsumer``
arguments on top of the settings' connection arguments and the driver's defaults,
and refuse what they do not know. `kafka_offsets` turns neutral offsets into the
ones kafka-python commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KafkaTopicPartition

from bus.clients.base import TopicPartition
from bus.settings import KafkaSettings
from core.errors import ConfigError

PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 5,
    "batch_size": 256 * 1024,
    "max_request_size": 1024 * 1024,  # the broker's default limit: larger fails at send()
    "retries": 2**31 - 1,
    "enable_idempotence": True,
    "reconnect_backoff_max_ms": 1000,  # back soon after a broker restart (default: 30 s)
}

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "isolation_level": "read_committed",
    "max_poll_records": 5000,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "fetch_max_wait_ms": 100,
    "session_timeout_ms": 6_000,  # the broker's minimum: a dead member's partitions move soon
    "heartbeat_interval_ms": 1_500,
    "metadata_max_age_ms": 30_000,
    "reconnect_backoff_max_ms": 1000,
}

PRODUCER_OPTIONS = (
    "transactional_id",
    "linger_ms",
    "batch_size",
    "acks",
    "max_request_size",
    "transaction_timeout_ms",
)
CONSUMER_OPTIONS = (
    "group_id",
    "group_instance_id",
    "max_poll_records",
    "fetch_max_wait_ms",
    "read_committed",
    "auto_offset_reset",
    "session_timeout_ms",
    "heartbeat_interval_ms",
)
ACKS = {"all": "all", "-1": "all", -1: "all", "1": 1, 1: 1, "0": 0, 0: 0}
OFFSET_RESETS = ("earliest", "latest")
DEFAULT_TRANSACTION_TIMEOUT_MS = 60_000  # kafka-python's default


def _unknown(options: Mapping[str, Any], known: Sequence[str], what: str) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown {what} option(s) {', '.join(unknown)}: expected some of {', '.join(known)}"
        )


def producer_config(settings: KafkaSettings, options: Mapping[str, Any]) -> dict[str, Any]:
    """kafka-python ``KafkaProducer`` arguments for the neutral ``options``."""
    _unknown(options, PRODUCER_OPTIONS, "producer")
    config = {**settings.client_kwargs(), **PRODUCER_DEFAULTS}
    for name, value in options.items():
        if value is not None:
            config[name] = value
    if "acks" in options:
        if options["acks"] not in ACKS:
            raise ConfigError(f"producer option acks={options['acks']!r}: expected all, 1 or 0")
        config["acks"] = ACKS[options["acks"]]
        if config["acks"] != "all":
            if options.get("transactional_id"):
                raise ConfigError("a transactional producer needs acks=all")
            config["enable_idempotence"] = False  # idempotence needs acks=all
    return config


def consumer_config(settings: KafkaSettings, options: Mapping[str, Any]) -> dict[str, Any]:
    """kafka-python ``KafkaConsumer`` arguments for the neutral ``options``."""
    _unknown(options, CONSUMER_OPTIONS, "consumer")
    config = {**settings.client_kwargs(), **CONSUMER_DEFAULTS, "group_id": None}
    for name, value in options.items():
        if value is None:
            continue
        if name == "read_committed":
            config["isolation_level"] = "read_committed" if value else "read_uncommitted"
        elif name == "auto_offset_reset" and value not in OFFSET_RESETS:
            raise ConfigError(
                f"consumer option auto_offset_reset={value!r}: expected earliest or latest"
            )
        else:
            config[name] = value
    if config.get("group_instance_id") and not config["group_id"]:
        raise ConfigError("consumer option group_instance_id needs a group_id")
    return config


def kafka_offsets(
    offsets: Mapping[TopicPartition, int],
) -> dict[KafkaTopicPartition, OffsetAndMetadata]:
    """kafka-python's offsets to commit for the neutral ``offsets`` (next offset to read)."""
    return {
        KafkaTopicPartition(tp[0], tp[1]): OffsetAndMetadata(offset, "", -1)
        for tp, offset in offsets.items()
    }
