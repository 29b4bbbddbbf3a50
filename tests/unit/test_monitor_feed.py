"""The monitor's feed threads and group probe, on the in-memory Kafka."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from bus.clients.base import TopicPartition
from bus.clients.memory import MemoryBroker, MemoryDriver
from bus.messages import ModelVersion, Prediction, Score
from bus.topics import Topics
from core.errors import BusError
from monitor.config import MonitorConfig
from monitor.feed import Feed
from monitor.groups import GroupProbe
from monitor.records import Recorder
from monitor.state import Dashboard
from monitor.views import deadletters_view, groups_view, models_view, scores_view

TOPICS = Topics.with_prefix("t.")


class StubAdmin:
    """The three admin calls the probe makes, answering from fixed data."""

    def __init__(self, offsets: dict[str, dict[Any, Any]], members: dict[str, list[Any]]) -> None:
        self.offsets = offsets
        self.members = members
        self.closed = False

    def list_groups(self) -> list[dict[str, str]]:
        return [{"group_id": g} for g in self.offsets]

    def list_group_offsets(self, specs: dict[str, None]) -> dict[str, dict[Any, Any]]:
        return {g: self.offsets[g] for g in specs}

    def describe_groups(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        return {g: {"group_state": "Stable", "members": self.members.get(g, [])} for g in ids}

    def close(self) -> None:
        self.closed = True


def offset(topic: str, partition: int, value: int) -> tuple[Any, Any]:
    return TopicPartition(topic, partition), SimpleNamespace(offset=value)


def broker_with_topics() -> MemoryBroker:
    broker = MemoryBroker()
    for name in TOPICS.all().values():
        broker.create_topic(name, 2)
    return broker


def wait_until(check: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_group_probe_keeps_groups_of_the_watched_topics_with_lag() -> None:
    broker = broker_with_topics()
    driver = MemoryDriver(broker)
    producer = driver.producer()
    for i in range(10):
        producer.send(TOPICS.points, b"{}", partition=i % 2)
    producer.flush()
    admin = StubAdmin(
        {
            "scorer": dict([offset(TOPICS.points, 0, 3), offset(TOPICS.points, 1, 5)]),
            "someone-else": dict([offset("other-topic", 0, 7)]),
        },
        {"scorer": [{"client_id": "scorer-1", "client_host": "/10.0.0.1"}]},
    )
    clock = iter([1.0, 3.0])
    probe = GroupProbe(
        admin, driver.consumer(group_id=None), TOPICS.all().values(), lambda: next(clock)
    )
    groups, topics = probe.sample()
    assert [g.group for g in groups] == ["scorer"]
    assert groups[0].committed == {TOPICS.points: 8}
    assert groups[0].lag == {TOPICS.points: 2}
    assert groups[0].members == ("scorer-1@10.0.0.1",)
    assert {t.topic: t.end for t in topics}[TOPICS.points] == 10
    board = Dashboard()
    board.add_groups(groups, topics)
    admin.offsets["scorer"] = dict([offset(TOPICS.points, 0, 5), offset(TOPICS.points, 1, 5)])
    board.add_groups(*probe.sample())
    view = groups_view(board.snapshot())
    assert view["groups"][0]["lag"] == 0
    assert view["groups"][0]["rate"] == 1.0  # 2 records in 2 s


def test_feed_fills_the_dashboard_from_every_topic() -> None:
    broker = broker_with_topics()
    driver = MemoryDriver(broker)
    producer = driver.producer()
    for version in (1, 2):
        model = ModelVersion(
            "m", version, "multivariate", 1, {"coef": [1.0], "intercept": 0.0},
            {"count": 10}, {"r2": 1.0, "rmse": 0.1, "mae": 0.1}, 0,
        )  # fmt: skip
        producer.send(TOPICS.models, model.to_bytes(), key=b"m")
    producer.send(TOPICS.scores, Score("m", 2, 10, 10, 0.9, 0.2, 0.1, 5).to_bytes(), key=b"m")
    for i in range(5):
        value = Prediction(f"p{i}", 1.0, "m", 2, None, i).to_bytes()
        producer.send(TOPICS.predictions, value, partition=i % 2)
    headers = [("error", b"not JSON"), ("source-topic", TOPICS.points.encode())]
    producer.send(TOPICS.deadletter, b"junk", headers=headers)
    producer.flush()
    board = Dashboard()
    admin = StubAdmin({}, {})
    config = MonitorConfig(groups_every_s=0.2)  # the least the setting takes
    feed = Feed(driver, TOPICS, Recorder(TOPICS, board), config, lambda: admin).start()
    try:

        def complete() -> bool:
            snap = board.snapshot()
            return snap.models_loaded and snap.serving is not None and snap.deadletters_total > 0

        wait_until(complete)
        snap = board.snapshot()
        assert [v["version"] for v in models_view(snap)["models"][0]["versions"]] == [1, 2]
        assert models_view(snap)["serving"]["version"] == 2
        assert scores_view(snap)["series"][0]["points"][0]["rmse"] == 0.2
        assert deadletters_view(snap)["latest"][0]["error"] == "not JSON"
        producer.send(TOPICS.models, None, key=b"m")
        producer.flush()
        wait_until(lambda: not board.snapshot().versions)
    finally:
        feed.close()
    assert admin.closed


def test_group_probe_failure_is_a_bus_error() -> None:
    class Failing(StubAdmin):
        def list_groups(self) -> list[dict[str, str]]:
            raise TimeoutError("coordinator not available")

    broker = broker_with_topics()
    probe = GroupProbe(Failing({}, {}), MemoryDriver(broker).consumer(group_id=None), ["t.points"])
    with pytest.raises(BusError, match="could not read the consumer groups: coordinator"):
        probe.sample()
