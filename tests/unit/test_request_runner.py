"""The scorer's request runner: the options its clients get (replies at once, long fetches)."""

from __future__ import annotations

import threading
import time
from typing import Any

from bus.clients.memory import MemoryBroker, MemoryConsumer, MemoryDriver, MemoryProducer
from bus.topics import Topics
from core.shutdown import StopFlag
from scorer.config import ScorerConfig
from scorer.service import REQUESTS_FETCH_WAIT_MS, Scorer, requests_stream

TOPICS = Topics()


def test_the_request_stream_sends_at_once_and_fetches_with_a_long_wait() -> None:
    config = requests_stream(TOPICS, ScorerConfig(requests_group_id="rq"), retry_s=5.0)
    assert config.topics == (TOPICS.requests,) and config.group_id == "rq"
    assert config.delivery == "at-least-once" and not config.background_commit
    assert config.producer_options == {"linger_ms": 0}
    # the broker answers a fetch when a request comes: the wait only bounds an idle fetch
    assert config.consumer_options == {"fetch_max_wait_ms": REQUESTS_FETCH_WAIT_MS}
    assert REQUESTS_FETCH_WAIT_MS >= 100
    assert config.max_batch == 500 and config.poll_timeout_s == 0.1


class RecordingDriver(MemoryDriver):
    """A memory driver that notes the options of every client it makes."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self.consumers: list[dict[str, Any]] = []
        self.producers: list[dict[str, Any]] = []

    def consumer(self, **options: Any) -> MemoryConsumer:
        self.consumers.append(options)
        return super().consumer(**options)

    def producer(self, **options: Any) -> MemoryProducer:
        self.producers.append(options)
        return super().producer(**options)


def test_the_scorer_gives_the_request_runner_these_options() -> None:
    broker = MemoryBroker()
    for name in ("points", "predictions", "requests", "replies"):
        broker.create_topic(getattr(TOPICS, name), 2)
    for name in ("models", "scores", "deadletter", "trainer_state"):
        broker.create_topic(getattr(TOPICS, name), 1)
    driver = RecordingDriver(broker)
    stop = StopFlag()
    config = ScorerConfig(requests_group_id="answers")
    scorer = Scorer(driver, TOPICS, config, stop=stop, retry_s=5.0)
    thread = threading.Thread(target=scorer.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            c.get("group_id") == "answers" for c in driver.consumers
        ):
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(20)
    (options,) = [c for c in driver.consumers if c.get("group_id") == "answers"]
    assert options["fetch_max_wait_ms"] == REQUESTS_FETCH_WAIT_MS
    assert {"linger_ms": 0} in [
        {k: v for k, v in p.items() if k == "linger_ms"} for p in driver.producers
    ]
