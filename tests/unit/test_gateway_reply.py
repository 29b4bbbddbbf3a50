"""The client side of request/reply (`bus.reply.ReplyClient`) with fake Kafka clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from bus.messages import InferReply, InferRequest
from bus.reply import (
    CORRELATION_ID,
    AsyncTicket,
    ReplyAddress,
    ReplyClient,
    ReplyTimeoutError,
    RequestTooLargeError,
    TooManyPendingError,
    UnknownTicketError,
)
from bus.settings import KafkaSettings
from streamscore.errors import BusError

REQUEST = InferRequest("r-1", [[1.0, 2.0]], "lin", None)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    headers: list[tuple[str, bytes]]
    value: bytes | None
    key: bytes | None = None


class Future:
    def add_errback(self, f: Any, *args: Any) -> Future:
        return self

    def get(self, timeout: float | None = None) -> None:
        return None


@dataclass
class FakeProducer:
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send(self, topic: str, **kwargs: Any) -> Future:
        self.sent.append({"topic": topic, **kwargs})
        return Future()

    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def close(self, timeout: float | None = None) -> None:
        pass


@dataclass
class FakeConsumer:
    listener: Any = None
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    seeks: list[tuple[int, int | str]] = field(default_factory=list)
    down: bool = False

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    def poll(self, timeout_ms: int = 0) -> dict[Any, list[Record]]:
        time.sleep(timeout_ms / 1000 / 10)
        return {}

    def position(self, tp: TopicPartition) -> int:
        return self.positions.get(tp, 0)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp.partition, offset))

    def seek_to_end(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, "end"))

    def end_offsets(self, tps: list[TopicPartition], timeout_ms: int = 0) -> dict[Any, int]:
        if self.down:
            raise KafkaTimeoutError("broker down")
        return dict.fromkeys(tps, 0)

    def close(self, **kwargs: Any) -> None:
        pass


@pytest.fixture
def kafka() -> tuple[FakeProducer, FakeConsumer]:
    return FakeProducer(), FakeConsumer()


@pytest.fixture
def client(kafka: tuple[FakeProducer, FakeConsumer]) -> Iterator[ReplyClient]:
    producer, consumer = kafka
    ids = iter(f"id{i}" for i in range(1000))
    client = ReplyClient(
        KafkaSettings(),
        "requests",
        "replies",
        group_id="g",
        max_pending=2,
        new_id=lambda: next(ids),
        clock_ms=lambda: 1_000_000,
        producer_factory=lambda settings, **kw: producer,
        consumer_factory=lambda settings, **kw: consumer,
        probe_interval_s=0.05,
    ).start()
    yield client
    client.close()


def own(client: ReplyClient, consumer: FakeConsumer, *partitions: int) -> None:
    consumer.listener.on_partitions_assigned([TopicPartition("replies", p) for p in partitions])
    deadline = time.monotonic() + 2
    while client.owned_partitions() != sorted(partitions):
        assert time.monotonic() < deadline, "partitions never became usable"
        time.sleep(0.01)


def reply_record(sent: dict[str, Any], offset: int = 0, **reply: Any) -> Record:
    headers = dict(sent["headers"])
    body = InferReply(**{"id": "r-1", "model": "lin", "version": 1, "predictions": [1.0], **reply})
    return Record(
        "replies",
        int(headers["reply-partition"]),
        offset,
        [(CORRELATION_ID, headers[CORRELATION_ID])],
        body.to_bytes(),
    )


def call_in_thread(client: ReplyClient, timeout_s: float = 2.0) -> tuple[threading.Thread, dict]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["reply"] = client.call(REQUEST, timeout_s)
        except Exception as exc:
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def wait_sent(producer: FakeProducer, n: int) -> None:
    deadline = time.monotonic() + 2
    while len(producer.sent) < n:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_request_carries_the_contract_headers_and_gets_its_reply(
    client: ReplyClient, kafka: tuple[FakeProducer, FakeConsumer]
) -> None:
    producer, consumer = kafka
    own(client, consumer, 5)
    thread, out = call_in_thread(client)
    wait_sent(producer, 1)
    sent = producer.sent[0]
    assert sent["topic"] == "requests"
    assert InferRequest.from_bytes(sent["value"]) == REQUEST
    headers = dict(sent["headers"])
    assert headers == {"correlation-id": b"id0", "reply-topic": b"replies", "reply-partition": b"5"}
    assert sent["key"] == b"id0"
    client.deliver(reply_record(sent, predictions=[42.0]))
    thread.join(2)
    assert out["reply"].predictions == [42.0]
    stats = client.stats()
    assert (stats.pending, stats.sent, stats.replies, stats.late_replies) == (0, 1, 1, 0)


def test_the_scorer_reads_the_address_the_client_wrote(
    client: ReplyClient, kafka: tuple[FakeProducer, FakeConsumer]
) -> None:
    producer, consumer = kafka
    own(client, consumer, 2)
    thread, _ = call_in_thread(client, 0.2)
    wait_sent(producer, 1)
    sent = producer.sent[0]
    record = Record("requests", 0, 0, sent["headers"], sent["value"])
    assert ReplyAddress.of_request(record) == ReplyAddress("id0", "replies", 2)
    thread.join(2)


def test_a_late_reply_is_dropped_and_counted(
    client: ReplyClient, kafka: tuple[FakeProducer, FakeConsumer]
) -> None:
    producer, consumer = kafka
    own(client, consumer, 1)
    with pytest.raises(ReplyTimeoutError, match="no reply within"):
        client.call(REQUEST, 0.05)
    client.deliver(reply_record(producer.sent[0]))
    stats = client.stats()
    assert (stats.pending, stats.timeouts, stats.late_replies, stats.replies) == (0, 1, 1, 0)


def test_async_replies_are_not_late(
    client: ReplyClient, kafka: tuple[FakeProducer, FakeConsumer]
) -> None:
    producer, _ = kafka
    ticket = client.submit(REQUEST, 1.0)
    assert ticket.correlation_id.startswith("async-")
    assert ticket.sent_ms == 1_000_000 and ticket.partition in {0, 1, 2, 3}
    client.deliver(reply_record(producer.sent[0]))
    assert client.stats().late_replies == 0


def test_replies_go_to_owned_partitions_in_turn(
    client: ReplyClient, kafka: tuple[FakeProducer, FakeConsumer]
) -> None:
    producer, consumer = kafka
    own(client, consumer, 1, 3)
    for _ in range(4):
        with pytest.raises(ReplyTimeoutError):
            client.call(REQUEST, 0.01)
    used = [dict(s["headers"])["reply-partition"] for s in producer.sent]
    assert sorted(set(used)) == [b"1", b"3"]


def test_revoked_partitions_are_not_used(
    client: ReplyClient, kafka: tuple[FakeProducer, FakeConsumer]
) -> None:
    _, consumer = kafka
    own(client, consumer, 1, 3)
    consumer.listener.on_partitions_revoked([TopicPartition("replies", 1)])
    assert client.owned_partitions() == [3]
    consumer.listener.on_partitions_revoked([TopicPartition("replies", 3)])
    with pytest.raises(BusError, match="owns no partition"):
        client.call(REQUEST, 0.05)


def test_reassigned_partition_resumes_where_requests_wait(
    client: ReplyClient, kafka: tuple[FakeProducer, FakeConsumer]
) -> None:
    producer, consumer = kafka
    own(client, consumer, 4)
    thread, out = call_in_thread(client)
    wait_sent(producer, 1)
    client.deliver(Record("replies", 4, 40, [(CORRELATION_ID, b"other")], b"{}"))
    consumer.listener.on_partitions_revoked([TopicPartition("replies", 4)])
    consumer.listener.on_partitions_assigned([TopicPartition("replies", 4)])
    assert consumer.seeks[-1] == (4, 41)  # not the end: a request still waits there
    client.deliver(reply_record(producer.sent[0], offset=41))
    thread.join(2)
    assert "reply" in out


def test_newly_assigned_partitions_start_at_the_end(
    client: ReplyClient, kafka: tuple[FakeProducer, FakeConsumer]
) -> None:
    _, consumer = kafka
    own(client, consumer, 6)
    assert consumer.seeks == [(6, "end")]


def test_pending_requests_are_bounded(
    client: ReplyClient, kafka: tuple[FakeProducer, FakeConsumer]
) -> None:
    producer, consumer = kafka
    own(client, consumer, 0)
    threads = [call_in_thread(client, 1.0) for _ in range(2)]
    wait_sent(producer, 2)
    with pytest.raises(TooManyPendingError, match="already waits for 2"):
        client.call(REQUEST, 1.0)
    assert client.stats().rejected == 1
    for sent in producer.sent:
        client.deliver(reply_record(sent))
    for thread, out in threads:
        thread.join(2)
        assert "reply" in out


def test_a_malformed_reply_fails_its_request(
    client: ReplyClient, kafka: tuple[FakeProducer, FakeConsumer]
) -> None:
    producer, consumer = kafka
    own(client, consumer, 0)
    thread, out = call_in_thread(client)
    wait_sent(producer, 1)
    record = reply_record(producer.sent[0])
    record.value = b"nope"
    client.deliver(record)
    thread.join(2)
    assert "malformed reply" in str(out["error"])


def test_unreachable_kafka_fails_fast(kafka: tuple[FakeProducer, FakeConsumer]) -> None:
    producer, consumer = kafka
    consumer.down = True
    client = ReplyClient(
        KafkaSettings(),
        "requests",
        "replies",
        group_id="g",
        producer_factory=lambda settings, **kw: producer,
        consumer_factory=lambda settings, **kw: consumer,
    ).start()
    try:
        started = time.monotonic()
        with pytest.raises(BusError, match="cannot be reached"):
            client.call(REQUEST, 5.0)
        assert time.monotonic() - started < 1
        assert producer.sent == []
    finally:
        client.close()


def test_a_request_too_large_for_the_bus(client: ReplyClient) -> None:
    big = InferRequest("r", [[123456.789] * 10_000] * 10)
    with pytest.raises(RequestTooLargeError, match="fewer rows"):
        client.call(big, 1.0)


def test_ticket_tokens_round_trip() -> None:
    ticket = AsyncTicket(7, 1_700_000_000_123, "async-0123abcd")
    assert ticket.token() == "7.1700000000123.0123abcd"
    assert AsyncTicket.parse(ticket.token()) == ticket
    for bad in ("", "7.1.", "x.1.abc", "7.1.abc/def", "1234567.1.a", "7.1.a.b"):
        with pytest.raises(UnknownTicketError):
            AsyncTicket.parse(bad)
