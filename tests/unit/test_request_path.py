"""How the request path is tuned: the gateway's flusher collects deliveries in bulk."""

from __future__ import annotations

import threading
import time

from bus.clients.base import TopicPartition
from bus.clients.memory import MemoryBroker
from bus.messages import InferReply, InferRequest
from bus.reply import ReplyAddress, ReplyClient


def answer_all(broker: MemoryBroker, stop: threading.Event) -> None:
    """Answer every request as the scorer does (to the partition it names)."""
    consumer = broker.driver().consumer(group_id=None)
    consumer.assign([TopicPartition("requests", 0)])
    while not stop.is_set():
        for record in consumer.poll(0.01):
            address = ReplyAddress.of_request(record)
            asked = InferRequest.from_bytes(record.value)
            broker.produce(
                "replies",
                InferReply(asked.id, "lin", 1, [1.0]).to_bytes(),
                key=address.correlation_id.encode(),
                partition=address.partition,
                headers=address.reply_headers(),
            )
    consumer.close()


def test_the_flusher_collects_many_requests_deliveries_in_one_flush() -> None:
    broker = MemoryBroker()
    broker.create_topic("requests", 1)
    broker.create_topic("replies", 2)
    client = ReplyClient(
        broker.driver(), "requests", "replies", slot=1, probe_interval_s=0.05, flush_every_s=0.5
    )
    stop = threading.Event()
    scorer = threading.Thread(target=answer_all, args=(broker, stop))
    scorer.start()
    try:
        assert client.wait_ready(5)
        before = broker.calls.get("flush", 0)
        replies = [client.call(InferRequest(f"r{i}", [[1.0]]), 2.0) for i in range(20)]
        flushed = broker.calls.get("flush", 0) - before
        assert [r.id for r in replies] == [f"r{i}" for i in range(20)]
        assert flushed <= 2  # one flush per request before: 20
        deadline = time.monotonic() + 3
        while broker.calls.get("flush", 0) - before < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert broker.calls.get("flush", 0) - before >= 1  # the deliveries are collected
    finally:
        stop.set()
        scorer.join(5)
        client.close()
