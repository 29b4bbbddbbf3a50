"""The request runner commits on a timer, not per batch: no synchronous flush before each poll."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from bus.clients.base import Record
from bus.clients.memory import MemoryBroker, MemoryDriver
from bus.messages import InferReply, InferRequest
from bus.reply import ReplyAddress
from bus.stream import StreamConfig, StreamRunner
from core.shutdown import StopFlag
from regressors import make_regressor
from scorer.registry import LiveModel, ModelRegistry
from scorer.requests import RequestStep

NOW_S = 1_700_000_000.0


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def registry() -> ModelRegistry:
    x = np.random.default_rng(1).normal(size=(20, 3))
    regressor = make_regressor("multivariate").fit(x, x @ [1.0, 2.0, 3.0])
    models = ModelRegistry()
    models.add(LiveModel("lin", 1, "multivariate", 3, 0.1, regressor))
    return models


def step(clock: Clock, *, commit_every_s: float = 0.5, wall: Any = lambda: NOW_S) -> RequestStep:
    models = registry()
    return RequestStep(
        replies_topic="replies",
        reply_partitions=lambda: 2,
        registry=models,
        serving=lambda: models.get("lin"),
        clock=wall,
        commit_every_s=commit_every_s,
        monotonic=clock,
    )


def record(offset: int, cid: str = "c1") -> Record:
    return Record(
        "requests",
        0,
        offset,
        cid.encode(),
        InferRequest(cid, [[0.5, -0.25, 1.0]]).to_bytes(),
        int(NOW_S * 1000),
        ReplyAddress(cid, "replies", 1).request_headers(),
    )


def test_a_batch_commits_only_once_the_interval_has_passed() -> None:
    clock = Clock()
    requests = step(clock)
    first = requests.process([record(0)])
    assert first.outputs and first.commit is False  # answered, not waited for
    clock.now += 0.6
    second = requests.process([record(1)])
    assert second.commit is True
    requests.committed(first)
    requests.committed(second)
    assert requests.answered == 2
    clock.now += 0.1  # the interval starts again at the last commit
    assert requests.process([record(2)]).commit is False


def test_an_empty_poll_commits_what_was_answered() -> None:
    idle = step(Clock()).idle()
    assert idle is not None and idle.commit and not idle.outputs and not idle.deadletters


def test_the_runner_answers_a_stream_of_batches_without_a_flush_per_batch() -> None:
    broker = MemoryBroker()
    broker.create_topic("requests", 1)
    broker.create_topic("replies", 2)
    broker.create_topic("deadletter", 1)
    driver = MemoryDriver(broker)
    producer = driver.producer()
    stop = StopFlag()
    config = StreamConfig(
        topics=("requests",), group_id="g", service="requests", max_batch=1, poll_timeout_s=0.01
    )
    requests = step(Clock(), commit_every_s=3600.0, wall=time.time)
    runner = StreamRunner(driver, config, requests, stop=stop)
    for offset in range(20):
        cid = f"c{offset}"
        producer.send(
            "requests",
            InferRequest(cid, [[0.5, -0.25, 1.0]]).to_bytes(),
            key=cid.encode(),
            headers=ReplyAddress(cid, "replies", 1).request_headers(),
        )
    before = broker.calls.get("flush", 0)
    thread = threading.Thread(target=runner.run)
    thread.start()
    deadline = time.monotonic() + 10
    while runner.stats.records < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(10)
    replies = [InferReply.from_bytes(r.value or b"") for r in broker.records("replies")]
    assert sorted(r.id for r in replies) == sorted(f"c{i}" for i in range(20))
    assert runner.stats.batches == 20
    # 20 batches of one record: flushed at the empty polls' commits and the stop, not per batch
    assert broker.calls.get("flush", 0) - before < 10
