"""Errors of the confluent-kafka driver: librdkafka's codes classified, and client creation.

What librdkafka raises when the broker fails (found against a single Kafka 4.1
broker killed with SIGKILL and restarted, confluent-kafka 2.16), and what
`classify` makes of it:

- killed during a transaction, back within the transaction timeout: sends are
  retried and the commit succeeds once the broker is back.
- ``commit_transaction`` while the broker is away: ``_TIMED_OUT`` ("retry call
  to resume"): `TransientBusError`; the same commit retried after the restart
  succeeds.
- away longer than the transaction timeout: the coordinator aborts the
  transaction and bumps the producer epoch; librdkafka then reports the fatal
  ``_FENCED`` ("Producer attempted an operation with an old epoch ...
  transactional producer fenced by newer producer instance") on flush, commit
  and abort, and ``INVALID_PRODUCER_EPOCH`` for the records.
- another producer with the same transactional id: exactly the same errors.
  The driver tells the two apart by time: a stale epoch or fence when the
  transaction has been open longer than its transaction timeout is the
  coordinator's abort (`TransientBusError`: make a new producer, this one is
  unusable; redo the batch), otherwise another instance (`FencedError`).
- plain (idempotent) sends while the broker is away: retried; ``flush``
  succeeds once it is back.
- consumer commits while the broker is away: ``_WAIT_COORD``; right after the
  restart ``UNKNOWN_MEMBER_ID``; ``committed`` ``_TIMED_OUT``: `TransientBusError`.
  Polls return nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import (  # type: ignore[import-untyped]
    KafkaError,
    KafkaException,
)

from bus.clients.base import FencedError, RecordTooLargeError, TransientBusError
from bus.settings import KafkaSettings
from core.errors import BusError, ConfigError, StreamscoreError

__all__ = [
    "EOF_CODE",
    "INFORMATIONAL_CODES",
    "STATE_CODE",
    "classify",
    "library_error",
    "make_client",
]

log = logging.getLogger(__name__)
# librdkafka's own log lines, under the driver's name
librdkafka_log = logging.getLogger("bus.clients.confluent.librdkafka")


def _codes(*names: str) -> tuple[int, ...]:
    """librdkafka's error codes by name (those of this release); local ones start with ``_``."""
    return tuple(getattr(KafkaError, name) for name in names if hasattr(KafkaError, name))


_FENCED_CODES = _codes("_FENCED", "PRODUCER_FENCED")
_TOO_LARGE_CODES = (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE)
_CONFIG_CODES = _codes("_INVALID_ARG", "INVALID_CONFIG")
_TRANSIENT_CODES = _codes(
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "_TIMED_OUT",
    "_MSG_TIMED_OUT",
    "_TIMED_OUT_QUEUE",
    "_WAIT_COORD",
    "_PURGE_QUEUE",
    "_PURGE_INFLIGHT",
    "_PREV_IN_PROGRESS",
    "_NO_OFFSET",
    "_ASSIGNMENT_LOST",
    "_MAX_POLL_EXCEEDED",
    "_UNKNOWN_PARTITION",
    "_OUTDATED",  # a seek overtaken by the client resetting positions (broker restart)
    "REQUEST_TIMED_OUT",
    "NETWORK_EXCEPTION",
    "NOT_COORDINATOR",
    "COORDINATOR_NOT_AVAILABLE",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "NOT_LEADER_FOR_PARTITION",
    "LEADER_NOT_AVAILABLE",
    "REBALANCE_IN_PROGRESS",
    "ILLEGAL_GENERATION",
    "UNKNOWN_MEMBER_ID",
    "CONCURRENT_TRANSACTIONS",
    "INVALID_PRODUCER_EPOCH",
    "UNKNOWN_PRODUCER_ID",
    "OUT_OF_ORDER_SEQUENCE_NUMBER",
    "TRANSACTION_ABORTABLE",
    "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "KAFKA_STORAGE_ERROR",
    "FENCED_LEADER_EPOCH",
    "UNKNOWN_LEADER_EPOCH",
    "STALE_MEMBER_EPOCH",
    "FENCED_MEMBER_EPOCH",
    "UNSTABLE_OFFSET_COMMIT",
)
# Errors a consumer reports as messages that mean "nothing to read here yet": logged, skipped.
INFORMATIONAL_CODES = _codes(
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "UNKNOWN_TOPIC_OR_PART",
    "_UNKNOWN_PARTITION",
    "_UNKNOWN_TOPIC",
    "LEADER_NOT_AVAILABLE",
    "NOT_LEADER_FOR_PARTITION",
    "_MAX_POLL_EXCEEDED",
)
(EOF_CODE,) = _codes("_PARTITION_EOF")
(STATE_CODE,) = _codes("_STATE")  # an operation the client's state does not allow yet
(FATAL_CODE,) = _codes("_FATAL")  # the client hit a fatal error: its cause comes in error_cb
(OUTDATED_CODE,) = _codes("_OUTDATED")  # overtaken by the client resetting a position


def library_error(exc: BaseException | KafkaError) -> KafkaError | None:
    """The library's error inside ``exc`` (None when it is not a confluent-kafka error)."""
    if isinstance(exc, KafkaError):
        return exc
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def classify(exc: BaseException | KafkaError, doing: str, *, txn_age_s: float | None = None,
             txn_timeout_s: float = float("inf")) -> StreamscoreError:  # fmt: skip
    """The streamscore error for a confluent-kafka error met while ``doing`` something.

    ``txn_age_s`` is given for a transactional producer: how long its transaction
    has been open. Then a stale producer epoch means fenced, by another instance
    within ``txn_timeout_s``, by the coordinator aborting the transaction after it
    (see the module doc). Chain the result to the library's exception.
    """
    error = library_error(exc)
    if error is None:
        return BusError(f"{doing} failed ({exc}); check the broker, the topic and the settings")
    code = error.code()
    what = f"{error.name()}: {error.str()}"
    if code == KafkaError.FENCED_INSTANCE_ID:
        return FencedError(
            f"{doing}: another consumer with the same group instance id joined the group "
            f"({what}); stop this one (give every instance its own id)"
        )
    if code in _FENCED_CODES or (
        txn_age_s is not None and code == KafkaError.INVALID_PRODUCER_EPOCH
    ):
        if txn_age_s is not None and txn_age_s > txn_timeout_s:
            return TransientBusError(
                f"{doing}: the transaction was open {txn_age_s:.0f}s, longer than its "
                f"{txn_timeout_s:.0f}s timeout, and the coordinator aborted it ({what}); "
                "make a new producer and redo the batch"
            )
        return FencedError(
            f"{doing}: another producer with the same transactional id started and took over "
            f"({what}); stop this one (run one instance per transactional id)"
        )
    if code in _TOO_LARGE_CODES:
        return RecordTooLargeError(
            f"{doing}: a record is larger than the broker or max_request_size accepts ({what}); "
            "make it smaller or raise the limit"
        )
    if code in _CONFIG_CODES:
        return ConfigError(f"{doing}: bad Kafka client setting ({what}); fix the setting")
    if code in _TRANSIENT_CODES or error.retriable() or error.txn_requires_abort():
        return TransientBusError(
            f"{doing}: the broker is unreachable, busy or moved on ({what}); retry with backoff "
            "and redo what was not committed"
        )
    if error.fatal():
        return BusError(
            f"{doing}: the client hit a fatal error ({what}); this producer cannot be used "
            "any more: make a new one"
        )
    return BusError(f"{doing} failed ({what}); check the broker, the topic and the settings")


def _client_callbacks(
    config: dict[str, Any], on_fatal: Callable[[KafkaError], None] | None
) -> dict[str, Any]:
    """Route librdkafka's logs and global errors through Python logging (redacted there)."""

    def client_error(error: KafkaError) -> None:
        if error.fatal():
            log.error("Kafka client fatal error: %s", error.str())
            if on_fatal is not None:
                on_fatal(error)
        else:
            log.debug("Kafka client error (retried by the client): %s", error.str())

    config["logger"] = librdkafka_log
    config["error_cb"] = client_error
    return config


def make_client(
    kind: type[Any],
    settings: KafkaSettings,
    config: dict[str, Any],
    *,
    on_fatal: Callable[[KafkaError], None] | None = None,
) -> Any:
    """A librdkafka client of ``kind`` logging through Python logging; errors classified.

    ``on_fatal`` is told the client's fatal error (served by its next poll or flush):
    a call that fails afterwards says only ``_FATAL``, the cause is in that error.
    """
    try:
        return kind(_client_callbacks(dict(config), on_fatal))
    except KafkaException as exc:
        raise classify(exc, f"creating a Kafka client for {settings.bootstrap_servers}") from exc
