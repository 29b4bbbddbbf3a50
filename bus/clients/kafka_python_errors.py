"""Errors of the kafka-python driver: kafka-python's errors classified, and client creation.

What kafka-python raises when the broker fails (found against a single Kafka 4.1
broker killed with SIGKILL and restarted, kafka-python 3.0.12), and what
`classify` makes of it:

- killed during a transaction, back within the transaction timeout: sends are
  retried and the commit succeeds once the broker is back (reconnecting within
  a second: kafka-python's own reconnect backoff grows to 30 s, long enough to
  time the commit out).
- ``commit_transaction`` while the broker is away: no answer; here a
  `TransientBusError` after ``max_block_ms``. That commit may never complete
  (a retried commit timed out again after the restart), and aborting then fails
  ("Invalid transition ... from state COMMITTING_TRANSACTION", `BusError`):
  make a new producer; its ``init_transactions`` aborts the old transaction.
- away longer than the transaction timeout: the coordinator aborts the
  transaction and bumps the producer epoch. The next record fails with
  ``InvalidProducerEpochError``; an abort or commit with ``ProducerFencedError``
  (kafka-python maps ``INVALID_PRODUCER_EPOCH`` to it), also wrapped in a later
  ``KafkaError`` ("Cannot execute transactional method because we are in an
  error state: ...").
- another producer with the same transactional id: exactly the same errors
  (Kafka 4.1 answers a fenced producer's records with ``INVALID_PRODUCER_EPOCH``;
  kafka-python never says ``ProducerFencedError`` then). Left alone, kafka-python
  "recovers" by bumping its epoch (KIP-360) and, when that is refused, by taking
  a fresh producer id for the same transactional id: it fences the instance
  that took over. The driver turns that recovery off for transactional
  producers, so a stale epoch stays fatal for the producer, and tells the two
  cases apart by time: a stale epoch or fence when the transaction has been open
  longer than its transaction timeout is the coordinator's abort
  (`TransientBusError`: make a new producer, redo the batch), otherwise another
  instance (`FencedError`).
- plain (idempotent) sends while the broker is away: retried; ``flush`` succeeds
  once it is back (or ``KafkaTimeoutError`` at its timeout: `TransientBusError`).
- consumer commits while the broker is away: ``KafkaTimeoutError``; after a
  rebalance ``CommitFailedError``: `TransientBusError`. Polls return nothing.
"""

from __future__ import annotations

from kafka import errors as kafka_errors
from kafka.errors import KafkaConfigurationError, KafkaError

from bus.clients.base import FencedError, RecordTooLargeError, TransientBusError
from bus.settings import KafkaSettings
from core.errors import BusError, ConfigError, StreamscoreError

# Broker answers that mean "try again": the group or the transaction moved on, not us.
_TRANSIENT = (
    kafka_errors.RetriableError,
    kafka_errors.CommitFailedError,
    kafka_errors.RebalanceInProgressError,
    kafka_errors.IllegalGenerationError,
    kafka_errors.UnknownMemberIdError,
    kafka_errors.InvalidProducerEpochError,
    kafka_errors.UnknownProducerIdError,
    kafka_errors.OutOfOrderSequenceNumberError,
    kafka_errors.TransactionAbortedError,
    kafka_errors.TransactionAbortableError,
    kafka_errors.BrokerNotAvailableError,
    kafka_errors.NotControllerError,
)
_TOO_LARGE = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
)
_FENCED_NAMES = ("ProducerFencedError",)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``, what it was raised from, and exceptions carried in its args (a few levels)."""
    found: list[BaseException] = []
    todo = [exc]
    while todo and len(found) < 20:
        current = todo.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += [a for a in current.args if isinstance(a, BaseException)]
    return found


def classify(exc: BaseException, doing: str, *, txn_age_s: float | None = None,
             txn_timeout_s: float = float("inf")) -> StreamscoreError:  # fmt: skip
    """The streamscore error for a kafka-python error met while ``doing`` something.

    ``txn_age_s`` is given for a transactional producer: how long its transaction
    has been open. Then a stale producer epoch means fenced, by another instance
    within ``txn_timeout_s``, by the coordinator aborting the transaction after it
    (see the module doc). Chain the result to ``exc`` (``raise ... from exc``).
    """
    causes = _causes(exc)
    text = " ".join(str(e) for e in causes)
    if any(isinstance(e, kafka_errors.FencedInstanceIdError) for e in causes) or (
        "FencedInstanceIdError" in text
    ):
        return FencedError(
            f"{doing}: another consumer with the same group instance id joined the group "
            f"({exc}); stop this one (give every instance its own id)"
        )
    fenced = any(type(e).__name__ in _FENCED_NAMES for e in causes) or any(
        name in text for name in _FENCED_NAMES
    )
    if fenced or (txn_age_s is not None and "InvalidProducerEpochError" in text):
        if txn_age_s is not None and txn_age_s > txn_timeout_s:
            return TransientBusError(
                f"{doing}: the transaction was open {txn_age_s:.0f}s, longer than its "
                f"{txn_timeout_s:.0f}s timeout, and the coordinator aborted it ({exc}); "
                "make a new producer and redo the batch"
            )
        return FencedError(
            f"{doing}: another producer with the same transactional id started and took over "
            f"({exc}); stop this one (run one instance per transactional id)"
        )
    if any(isinstance(e, _TOO_LARGE) for e in causes):
        return RecordTooLargeError(
            f"{doing}: a record is larger than the broker or max_request_size accepts ({exc}); "
            "make it smaller or raise the limit"
        )
    if any(isinstance(e, KafkaConfigurationError) for e in causes):
        return ConfigError(f"{doing}: bad Kafka client setting ({exc}); fix the setting")
    if (
        any(isinstance(e, _TRANSIENT) for e in causes)
        or "TransactionAbortable" in text
        or "from state BUMPING_PRODUCER_EPOCH" in text  # recovering after an aborted transaction
    ):
        return TransientBusError(
            f"{doing}: the broker is unreachable, busy or moved on ({exc}); retry with backoff "
            "and redo what was not committed"
        )
    return BusError(f"{doing} failed ({exc}); check the broker, the topic and the settings")


def connect_error(settings: KafkaSettings, exc: KafkaError) -> StreamscoreError:
    """The error for a client that cannot be made (bad setting, or no broker answers)."""
    if isinstance(exc, KafkaConfigurationError):
        return ConfigError(f"bad Kafka client setting: {exc}")
    return BusError(
        f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}. "
        "Is the broker up? (`streamscore kafka up` starts a local one)"
    )
