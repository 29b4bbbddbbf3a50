"""kafka-python consumer: `partitions_for` on a kafka-python without the internals it uses."""

from __future__ import annotations

from typing import Any

from bus.clients.kafka_python_consumer import KafkaPythonConsumer, topic_partitions


class OtherKafkaPython:
    """A consumer client of another kafka-python: no connection manager or IO loop."""

    def __init__(self, partitions: dict[str, set[int]]) -> None:
        self.partitions = partitions
        self.topics_calls = 0

    def topics(self) -> set[str]:
        self.topics_calls += 1
        return set(self.partitions)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic)


def test_without_the_internals_partitions_for_falls_back_to_every_topics_metadata() -> None:
    client = OtherKafkaPython({"in": {2, 0, 1}})
    assert topic_partitions(client, "in", 1000) is None
    consumer = KafkaPythonConsumer(client, {})
    assert consumer.partitions_for("in") == [0, 1, 2]
    assert consumer.partitions_for("missing") == []
    assert client.topics_calls == 2


def test_the_request_names_the_topic_alone_and_never_creates_it() -> None:
    sent: list[Any] = []

    class Answer:
        topics = [
            type("T", (), {"name": "in", "error_code": 0, "partitions": [
                type("P", (), {"partition_index": i})() for i in (1, 0)
            ]})(),
            type("T", (), {"name": "gone", "error_code": 3, "partitions": []})(),
        ]  # fmt: skip

    class Manager:
        def send(self, request: Any) -> Any:
            sent.append(request)
            return request

        async def wait_for(self, future: Any, timeout_ms: int) -> Any:
            return Answer()

    class Net:
        def run(self, coro: Any) -> Any:
            try:
                coro().send(None)
            except StopIteration as done:
                return done.value
            raise AssertionError("the request did not complete at once")

    client = type("Client", (), {"_manager": Manager(), "_net": Net()})()
    assert topic_partitions(client, "in", 1000) == [0, 1]
    assert topic_partitions(client, "gone", 1000) == []
    assert [[t.name for t in r.topics] for r in sent] == [["in"], ["gone"]]
    assert not any(r.allow_auto_topic_creation for r in sent)
