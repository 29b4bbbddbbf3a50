"""The confluent-kafka driver against librdkafka's refusals: retried seeks, named fatal causes."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException  # type: ignore[import-untyped]

from bus.clients import confluent_consumer, confluent_producer
from bus.clients.base import FencedError, TopicPartition, TransientBusError
from bus.clients.confluent_consumer import ConfluentKafkaConsumer
from bus.clients.confluent_errors import FATAL_CODE, OUTDATED_CODE
from bus.clients.confluent_producer import ConfluentKafkaProducer
from bus.settings import KafkaSettings

FENCED_CODE = KafkaError.INVALID_PRODUCER_EPOCH  # one of the codes librdkafka fences with


class RefusingClient:
    """Stands in for librdkafka's consumer: refuses the first seeks with ``code``."""

    refusals = 0
    code = OUTDATED_CODE
    made: list[RefusingClient] = []

    def __init__(self, config: dict[str, Any]) -> None:
        RefusingClient.made.append(self)
        self.seeks: list[tuple[str, int, int]] = []
        self.assigned: list[tuple[str, int, int]] = []
        self.left = type(self).refusals

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))
        if self.left:
            self.left -= 1
            raise KafkaException(KafkaError(type(self).code, "Failed to seek to offset -2"))

    def incremental_unassign(self, tps: list[Any]) -> None:
        pass

    def incremental_assign(self, tps: list[Any]) -> None:
        self.assigned += [(tp.topic, tp.partition, tp.offset) for tp in tps]


def consumer(
    monkeypatch: pytest.MonkeyPatch, refusals: int, code: int, timeout_ms: int = 2000
) -> tuple[ConfluentKafkaConsumer, RefusingClient]:
    """The driver's consumer on a stand-in client, and the stand-in."""
    monkeypatch.setattr(RefusingClient, "refusals", refusals)
    monkeypatch.setattr(RefusingClient, "code", code)
    monkeypatch.setattr(RefusingClient, "made", [])
    monkeypatch.setattr(confluent_consumer, "ConfluentConsumer", RefusingClient)
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1", request_timeout_ms=timeout_ms)
    reader = ConfluentKafkaConsumer(settings, {}, joined=True, max_records=10)
    return reader, RefusingClient.made[-1]


def test_a_seek_overtaken_by_a_position_reset_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """librdkafka says _OUTDATED when a seek meets its own reset of the position
    (seen at start-up on a just-assigned models partition): the seek is retried,
    the consumer is not given up."""
    reader, client = consumer(monkeypatch, refusals=3, code=OUTDATED_CODE)
    reader.seek(TopicPartition("models", 0), -2)
    assert client.seeks == [("models", 0, -2)] * 4


def test_a_seek_refused_for_longer_than_the_request_timeout_is_a_transient_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader, _ = consumer(monkeypatch, refusals=10**6, code=OUTDATED_CODE, timeout_ms=50)
    with pytest.raises(TransientBusError, match=r"seeking models\[0\] to -2"):
        reader.seek(TopicPartition("models", 0), -2)


def test_other_seek_errors_are_raised_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    reader, client = consumer(monkeypatch, refusals=1, code=KafkaError.INVALID_CONFIG)
    with pytest.raises(Exception, match="seeking models"):
        reader.seek(TopicPartition("models", 0), -2)
    assert len(client.seeks) == 1


class FencedClient:
    """Stands in for librdkafka's producer after another instance took its transactional id:
    produce says only _FATAL; the cause (_FENCED) comes in the error callback that the
    next poll serves."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.error_cb = config["error_cb"]

    def produce(self, *args: Any, **kwargs: Any) -> None:
        raise KafkaException(KafkaError(FATAL_CODE, "Unable to produce message", fatal=True))

    def poll(self, timeout: float) -> int:
        self.error_cb(KafkaError(FENCED_CODE, "fenced by a newer producer instance", fatal=True))
        return 0


def test_a_send_failing_on_a_fatal_error_names_its_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    """A zombie's next send fails with "_FATAL" only: the driver finds the cause (fenced)
    and raises FencedError, not a generic BusError."""
    monkeypatch.setattr(confluent_producer, "ConfluentProducer", FencedClient)
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    producer = ConfluentKafkaProducer(settings, {"transactional.id": "tx"})
    with pytest.raises(FencedError, match="another producer with the same transactional id"):
        producer.send("points", b"zombie again")
