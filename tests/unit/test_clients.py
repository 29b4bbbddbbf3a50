"""The two Kafka client drivers without a broker: errors, options, raw batch decoding, redaction."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import KafkaError as CKError
from confluent_kafka import KafkaException
from kafka import KafkaConsumer, KafkaProducer
from kafka import errors as kerr
from kafka.admin import KafkaAdminClient

from bus.clients import confluent, driver_for, kafka_python
from bus.clients.base import FencedError, RecordTooLargeError, TransientBusError
from bus.settings import KafkaSettings
from core.errors import BusError, ConfigError
from core.logs import REDACTED, RedactSecrets, configure_logging, install_redaction

SETTINGS = KafkaSettings()

# --- error classification --------------------------------------------------------------


def _wrapped_in_args() -> Exception:
    return kerr.KafkaError("a send failed", kerr.ProducerFencedError())


def _wrapped_as_cause() -> Exception:
    try:
        try:
            raise kerr.ProducerFencedError()
        except kerr.ProducerFencedError as inner:
            raise kerr.KafkaError("the transaction failed") from inner
    except kerr.KafkaError as outer:
        return outer


KAFKA_PYTHON_TABLE: list[tuple[BaseException, type[Exception]]] = [
    (kerr.ProducerFencedError(), FencedError),
    (_wrapped_in_args(), FencedError),
    (_wrapped_as_cause(), FencedError),
    (
        kerr.KafkaError(
            "Cannot execute transactional method because we are in an error state: "
            "[Error 90] ProducerFencedError"
        ),
        FencedError,
    ),
    (kerr.FencedInstanceIdError(), FencedError),
    (kerr.MessageSizeTooLargeError("The message is 2000 bytes"), RecordTooLargeError),
    (kerr.RecordListTooLargeError(), RecordTooLargeError),
    (kerr.KafkaConfigurationError("Unrecognized configs"), ConfigError),
    (kerr.KafkaTimeoutError("Timeout waiting for future"), TransientBusError),
    (kerr.KafkaConnectionError("111 ECONNREFUSED"), TransientBusError),
    (kerr.NotLeaderForPartitionError(), TransientBusError),
    (kerr.LeaderNotAvailableError(), TransientBusError),
    (kerr.NotCoordinatorError(), TransientBusError),
    (kerr.CoordinatorNotAvailableError(), TransientBusError),
    (kerr.RequestTimedOutError(), TransientBusError),
    (kerr.CommitFailedError(), TransientBusError),
    (kerr.RebalanceInProgressError(), TransientBusError),
    (kerr.IllegalGenerationError(), TransientBusError),
    (kerr.UnknownMemberIdError(), TransientBusError),
    (kerr.InvalidProducerEpochError(), TransientBusError),
    (kerr.ConcurrentTransactionsError(), TransientBusError),
    (kerr.TransactionAbortableError(), TransientBusError),
    (
        kerr.KafkaError(
            "TransactionalId t: Invalid transition attempted from state "
            "BUMPING_PRODUCER_EPOCH to state ABORTING_TRANSACTION"
        ),
        TransientBusError,
    ),
    (kerr.TopicAuthorizationFailedError(), BusError),
    (kerr.InvalidTopicError(), BusError),
    (kerr.IllegalStateError("KafkaProducer already closed!"), BusError),
    (ValueError("not a Kafka error"), BusError),
]


@pytest.mark.parametrize(("exc", "expected"), KAFKA_PYTHON_TABLE, ids=lambda v: repr(v)[:60])
def test_kafka_python_errors_are_classified(exc: BaseException, expected: type) -> None:
    error = kafka_python.classify(exc, "committing the transaction")
    assert type(error) is expected
    assert str(error).startswith("committing the transaction")
    assert str(exc) in str(error) or type(exc).__name__ in str(error)


def _local(name: str) -> int:
    """A librdkafka local error code (named with a leading underscore) by name."""
    code: int = getattr(CKError, name)
    return code


CONFLUENT_TABLE: list[tuple[Any, type[Exception]]] = [
    (CKError(_local("_FENCED"), "fenced by a newer instance", fatal=True), FencedError),
    (CKError(CKError.PRODUCER_FENCED, fatal=True), FencedError),
    (CKError(CKError.FENCED_INSTANCE_ID), FencedError),
    (CKError(CKError.MSG_SIZE_TOO_LARGE), RecordTooLargeError),
    (CKError(CKError.RECORD_LIST_TOO_LARGE), RecordTooLargeError),
    (CKError(_local("_INVALID_ARG"), "No such configuration property"), ConfigError),
    (CKError(_local("_TRANSPORT")), TransientBusError),
    (CKError(_local("_ALL_BROKERS_DOWN")), TransientBusError),
    # a seek overtaken by the client resetting positions (seen right after a broker restart)
    (CKError(_local("_OUTDATED")), TransientBusError),
    (CKError(_local("_TIMED_OUT"), "retry call to resume", retriable=True), TransientBusError),
    (CKError(_local("_MSG_TIMED_OUT")), TransientBusError),
    (CKError(_local("_WAIT_COORD")), TransientBusError),
    (CKError(CKError.NOT_COORDINATOR), TransientBusError),
    (CKError(CKError.COORDINATOR_NOT_AVAILABLE), TransientBusError),
    (CKError(CKError.REBALANCE_IN_PROGRESS), TransientBusError),
    (CKError(CKError.ILLEGAL_GENERATION), TransientBusError),
    (CKError(CKError.UNKNOWN_MEMBER_ID), TransientBusError),
    (CKError(CKError.INVALID_PRODUCER_EPOCH), TransientBusError),
    (CKError(CKError.NOT_LEADER_FOR_PARTITION), TransientBusError),
    (CKError(CKError.INVALID_TXN_STATE, txn_requires_abort=True), TransientBusError),
    (CKError(CKError.TOPIC_AUTHORIZATION_FAILED), BusError),
    (CKError(CKError.OUT_OF_ORDER_SEQUENCE_NUMBER, fatal=True), TransientBusError),
    (CKError(CKError.CLUSTER_AUTHORIZATION_FAILED, fatal=True), BusError),
    (RuntimeError("not a Kafka error"), BusError),
]


@pytest.mark.parametrize(("error", "expected"), CONFLUENT_TABLE, ids=lambda v: repr(v)[:60])
def test_confluent_errors_are_classified(error: Any, expected: type) -> None:
    exc = KafkaException(error) if isinstance(error, CKError) else error
    for raised in (exc, error):  # as raised, and as a delivery callback gets it
        result = confluent.classify(raised, "flushing the producer")
        assert type(result) is expected
        assert str(result).startswith("flushing the producer")


def test_a_stale_epoch_outside_a_transaction_is_transient() -> None:
    assert type(kafka_python.classify(kerr.InvalidProducerEpochError(), "send")) is (
        TransientBusError
    )
    stale = KafkaException(CKError(CKError.INVALID_PRODUCER_EPOCH))
    assert type(confluent.classify(stale, "send")) is TransientBusError


def test_a_fatal_confluent_error_says_to_make_a_new_producer() -> None:
    error = confluent.classify(CKError(CKError.CLUSTER_AUTHORIZATION_FAILED, fatal=True), "send")
    assert "make a new one" in str(error)


@pytest.mark.parametrize(
    "exc",
    [
        kerr.ProducerFencedError(),
        kerr.InvalidProducerEpochError(),
        kerr.KafkaError(
            "Cannot execute transactional method because we are in an error state: "
            "[Error 47] InvalidProducerEpochError: None"
        ),
        KafkaException(CKError(_local("_FENCED"), "old epoch", fatal=True)),
        KafkaException(CKError(CKError.INVALID_PRODUCER_EPOCH)),
    ],
    ids=lambda v: repr(v)[:50],
)
def test_a_fence_after_the_transaction_timeout_is_the_coordinator_aborting_it(
    exc: BaseException,
) -> None:
    classify = kafka_python.classify if isinstance(exc, kerr.KafkaError) else confluent.classify
    within = classify(exc, "commit", txn_age_s=0.0, txn_timeout_s=10.0)
    after = classify(exc, "commit", txn_age_s=12.0, txn_timeout_s=10.0)
    assert type(within) is FencedError
    assert "another producer with the same transactional id" in str(within)
    assert type(after) is TransientBusError
    assert "longer than its 10s timeout" in str(after)


# --- options ---------------------------------------------------------------------------

DRIVER_CONFIGS = [
    pytest.param(kafka_python.producer_config, kafka_python.consumer_config, id="kafka-python"),
    pytest.param(confluent.producer_config, confluent.consumer_config, id="confluent"),
]


def test_kafka_python_defaults() -> None:
    producer = kafka_python.producer_config(SETTINGS, {})
    assert producer["enable_idempotence"] is True
    assert producer["acks"] == "all"
    assert producer["linger_ms"] == 5
    assert producer["batch_size"] >= 256 * 1024
    assert "transactional_id" not in producer
    consumer = kafka_python.consumer_config(SETTINGS, {})
    assert consumer["enable_auto_commit"] is False
    assert consumer["isolation_level"] == "read_committed"
    assert consumer["auto_offset_reset"] == "earliest"
    # a dead member's partitions move after the broker's minimum session (quick takeover)
    assert (consumer["session_timeout_ms"], consumer["heartbeat_interval_ms"]) == (6_000, 1_500)
    assert consumer["group_id"] is None


def test_confluent_defaults() -> None:
    producer = confluent.producer_config(SETTINGS, {})
    assert producer["enable.idempotence"] is True
    assert producer["acks"] == "all"
    assert producer["linger.ms"] == 5
    assert producer["delivery.report.only.error"] is True
    assert producer["partitioner"] == "murmur2_random"  # keys land where kafka-python puts them
    consumer = confluent.consumer_config(SETTINGS, {})
    assert consumer["enable.auto.commit"] is False
    assert consumer["isolation.level"] == "read_committed"
    assert consumer["auto.offset.reset"] == "earliest"
    assert (consumer["session.timeout.ms"], consumer["heartbeat.interval.ms"]) == (6_000, 1_500)
    assert consumer["group.id"].startswith("streamscore-unjoined-")  # librdkafka needs one


NEUTRAL_PRODUCER = {
    "transactional_id": "tx-1",
    "linger_ms": 20,
    "batch_size": 65536,
    "acks": "all",
    "max_request_size": 2_000_000,
    "transaction_timeout_ms": 15_000,
}
NEUTRAL_CONSUMER = {
    "group_id": "g",
    "group_instance_id": "g-1",
    "max_poll_records": 100,
    "fetch_max_wait_ms": 50,
    "read_committed": False,
    "auto_offset_reset": "latest",
    "session_timeout_ms": 9000,
    "heartbeat_interval_ms": 2500,
}


def test_kafka_python_maps_every_neutral_option() -> None:
    producer = kafka_python.producer_config(SETTINGS, NEUTRAL_PRODUCER)
    assert {k: producer[k] for k in NEUTRAL_PRODUCER} == NEUTRAL_PRODUCER
    consumer = kafka_python.consumer_config(SETTINGS, NEUTRAL_CONSUMER)
    assert consumer["isolation_level"] == "read_uncommitted"
    assert {k: consumer[k] for k in NEUTRAL_CONSUMER if k != "read_committed"} == {
        k: v for k, v in NEUTRAL_CONSUMER.items() if k != "read_committed"
    }
    assert set(producer) <= set(KafkaProducer.DEFAULT_CONFIG)
    assert set(consumer) <= set(KafkaConsumer.DEFAULT_CONFIG)


def test_confluent_maps_every_neutral_option() -> None:
    producer = confluent.producer_config(SETTINGS, NEUTRAL_PRODUCER)
    assert producer["transactional.id"] == "tx-1"
    assert producer["linger.ms"] == 20
    assert producer["batch.size"] == 65536
    assert producer["message.max.bytes"] == 2_000_000
    assert producer["transaction.timeout.ms"] == 15_000
    consumer = confluent.consumer_config(SETTINGS, NEUTRAL_CONSUMER)
    assert consumer["group.id"] == "g"
    assert consumer["group.instance.id"] == "g-1"
    assert consumer["fetch.wait.max.ms"] == 50
    assert consumer["isolation.level"] == "read_uncommitted"
    assert consumer["auto.offset.reset"] == "latest"
    assert (consumer["session.timeout.ms"], consumer["heartbeat.interval.ms"]) == (9000, 2500)
    assert "max_poll_records" not in consumer  # the driver's own batch limit


def test_librdkafka_knows_every_property_the_driver_sets() -> None:
    settings = KafkaSettings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "u",
            "KAFKA_SASL_PASSWORD": "p",
        }
    )
    producer = confluent_kafka.Producer(confluent.producer_config(settings, NEUTRAL_PRODUCER))
    producer.flush(0)
    consumer = confluent_kafka.Consumer(confluent.consumer_config(settings, NEUTRAL_CONSUMER))
    consumer.close()


@pytest.mark.parametrize(("producer_config", "consumer_config"), DRIVER_CONFIGS)
def test_bad_options_are_config_errors(producer_config: Any, consumer_config: Any) -> None:
    with pytest.raises(ConfigError, match=r"unknown producer option\(s\) lingering"):
        producer_config(SETTINGS, {"lingering": 5})
    with pytest.raises(ConfigError, match=r"unknown consumer option\(s\) enable_auto_commit"):
        consumer_config(SETTINGS, {"enable_auto_commit": True})
    with pytest.raises(ConfigError, match="acks='some'"):
        producer_config(SETTINGS, {"acks": "some"})
    with pytest.raises(ConfigError, match="transactional producer needs acks=all"):
        producer_config(SETTINGS, {"acks": 1, "transactional_id": "t"})
    with pytest.raises(ConfigError, match="auto_offset_reset='middle'"):
        consumer_config(SETTINGS, {"auto_offset_reset": "middle"})
    with pytest.raises(ConfigError, match="group_instance_id needs a group_id"):
        consumer_config(SETTINGS, {"group_instance_id": "x"})


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_the_drivers_refuse_unknown_options_before_connecting(client: str) -> None:
    driver = driver_for(replace(SETTINGS, bootstrap_servers="127.0.0.1:1", client=client))
    assert driver.name == client
    with pytest.raises(ConfigError):
        driver.producer(transactional="yes")
    with pytest.raises(ConfigError):
        driver.consumer(group="g")


@pytest.mark.parametrize(("producer_config", "consumer_config"), DRIVER_CONFIGS)
def test_acks_below_all_turns_idempotence_off(producer_config: Any, consumer_config: Any) -> None:
    config = producer_config(SETTINGS, {"acks": 1})
    assert config.get("enable_idempotence", config.get("enable.idempotence")) is False


# --- secrets out of logs ---------------------------------------------------------------


def test_redaction_covers_message_arguments_tracebacks_and_reprs() -> None:
    redact = RedactSecrets(["s3cr'et", None, ""])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "config %s", ({"pw": "s3cr'et"},),
                               None)  # fmt: skip
    assert redact.filter(record)
    assert record.getMessage() == "config {'pw': \"***\"}"
    try:
        raise ValueError("bad password s3cr'et")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    redact.filter(record)
    assert record.exc_text is not None
    assert "s3cr'et" not in record.exc_text
    assert REDACTED in record.exc_text
    assert RedactSecrets([]).redact("s3cr'et") == "s3cr'et"


@pytest.fixture
def restored_logging() -> Any:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("kafka").level)
    yield
    install_redaction(())
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("kafka").setLevel(saved[2])


def test_no_password_reaches_the_logs_at_debug(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    secret = "pw-Zq7hunter2"
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", secret)
    configure_logging("test", "DEBUG")
    settings = KafkaSettings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "alice",
            "KAFKA_SASL_PASSWORD": secret,
            "KAFKA_REQUEST_TIMEOUT_MS": "1000",
        }
    )
    fast = {"bootstrap_timeout_ms": 300, "reconnect_backoff_ms": 50}
    with pytest.raises(kerr.KafkaError):
        KafkaProducer(**settings.client_kwargs(), max_block_ms=300, **fast)
    with pytest.raises(kerr.KafkaError):  # logs its whole configuration at DEBUG
        KafkaAdminClient(**settings.client_kwargs(), **fast)
    logging.getLogger("bus.clients").exception("while using %s", settings.client_kwargs())
    out, err = capfd.readouterr()
    assert "Starting KafkaAdminClient with configuration" in err  # the config was logged
    assert f"'sasl_plain_password': '{REDACTED}'" in err
    assert secret not in out + err
