"""The gateway's model catalogue: what it keeps from ``models`` and ``scores`` records,
and its feed following both topics on the in-memory driver."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from bus.clients.base import Record as BusRecord
from bus.clients.base import TransientBusError
from bus.clients.memory import MemoryBroker
from bus.messages import ModelVersion, Score
from bus.signing import ModelKey, sign
from bus.topics import Topics
from core.errors import BusError, MessageError, ModelError
from gateway.catalogue import Catalogue, CatalogueFeed
from gateway.config import GatewayConfig

TOPICS = Topics.with_prefix("t.")


def Record(topic: str, value: bytes | None, key: bytes | None = None) -> BusRecord:  # noqa: N802
    """A record of partition 0, as a driver hands it over."""
    return BusRecord(topic, 0, 0, key, value, 0)


def model(name: str, version: int, n_features: int = 2) -> ModelVersion:
    terms = {1: 2, 2: 5, 3: 9}[n_features]  # degree 2, without the intercept
    return ModelVersion(
        name=name,
        version=version,
        kind="polynomial",
        n_features=n_features,
        params={
            "kind": "polynomial",
            "n_features": n_features,
            "degree": 2,
            "intercept": 0.5,
            "coef": [1.0] * terms,
        },
        trained_on={"count": 10 * version},
        train_score={"r2": 0.5, "rmse": 1.0, "mae": 0.5},
        created_at=version,
    )


def feed() -> CatalogueFeed:
    return CatalogueFeed(MemoryBroker().driver(), TOPICS, Catalogue())


def test_keeps_the_versions_the_scorer_loads_in_order() -> None:
    f = feed()
    for version in (1, 2, 3):
        f.apply(Record(TOPICS.models, model("poly", version).to_bytes(), b"poly"))
    entry = f.catalogue.get("poly")
    assert entry is not None
    assert [v.version for v in entry.versions] == [1, 2, 3]
    assert entry.latest.version == 3 and entry.latest.kind == "polynomial"
    second = entry.version(2)
    assert second is not None and second.trained_on == {"count": 20}
    assert entry.version(9) is None


def test_an_older_version_after_a_newer_one_is_not_listed() -> None:
    """The scorer never loads a version older than the one it serves: nor is it listed."""
    f = feed()
    for version in (2, 1, 3):
        f.apply(Record(TOPICS.models, model("poly", version).to_bytes(), b"poly"))
    entry = f.catalogue.get("poly")
    assert entry is not None and [v.version for v in entry.versions] == [2, 3]


def test_lists_exactly_the_history_the_scorer_keeps() -> None:
    """Versions 1-20 published, history 10: the metadata lists 11-20, which the scorer serves."""
    catalogue = Catalogue(history=10)
    for version in range(1, 21):
        catalogue.add_model(model("polynomial", version))
    entry = catalogue.get("polynomial")
    assert entry is not None
    assert [v.version for v in entry.versions] == list(range(11, 21))
    assert catalogue.lookup("polynomial", 10) is None
    assert catalogue.lookup("polynomial", 11) is not None


def test_the_history_is_the_scorers_setting() -> None:
    config = GatewayConfig.from_env({"STREAMSCORE_MODEL_HISTORY": "3"})
    catalogue = Catalogue(history=config.model_history)
    for version in range(1, 6):
        catalogue.add_model(model("a", version))
    entry = catalogue.get("a")
    assert entry is not None and [v.version for v in entry.versions] == [3, 4, 5]


def test_a_model_the_scorer_rejects_is_not_advertised() -> None:
    """2 coefficients for 3 features, version 999: the scorer refuses it, so does the catalogue."""
    f = feed()
    f.apply(Record(TOPICS.models, model("poly", 1, n_features=3).to_bytes(), b"poly"))
    bad = ModelVersion(
        name="poly",
        version=999,
        kind="multivariate",
        n_features=3,
        params={"kind": "multivariate", "n_features": 3, "intercept": 0.0, "coef": [1.0, 2.0]},
        trained_on={"count": 1},
        train_score={"r2": 0.5, "rmse": 1.0, "mae": 0.5},
        created_at=1,
    )
    f.apply(Record(TOPICS.models, bad.to_bytes(), b"poly"))
    entry = f.catalogue.get("poly")
    assert entry is not None and entry.latest.version == 1
    assert f.catalogue.lookup("poly", 999) is None


def test_kind_or_width_that_do_not_match_the_params_are_refused() -> None:
    catalogue = Catalogue()
    with pytest.raises(ModelError, match="n_features is 3"):
        catalogue.add_model(replace(model("a", 1), n_features=3))
    with pytest.raises(ModelError, match="kind is 'multivariate'"):
        catalogue.add_model(replace(model("a", 1), kind="multivariate"))
    assert catalogue.get("a") is None


def test_with_a_model_key_only_signed_versions_are_listed() -> None:
    key = ModelKey(b"k" * 32)
    catalogue = Catalogue(key=key)
    with pytest.raises(MessageError, match="signature missing"):
        catalogue.add_model(model("a", 1))
    assert catalogue.add_model(sign(model("a", 2), key))
    assert [i.version for i in catalogue.latest()] == [2]


def test_a_tombstone_forgets_the_model() -> None:
    f = feed()
    f.apply(Record(TOPICS.models, model("a", 1).to_bytes(), b"a"))
    f.apply(Record(TOPICS.models, model("b", 1).to_bytes(), b"b"))
    f.apply(Record(TOPICS.models, None, b"a"))
    assert [m.name for m in f.catalogue.models()] == ["b"]


def test_keeps_the_newest_score_per_version_and_overall() -> None:
    f = feed()
    f.apply(Record(TOPICS.models, model("a", 1).to_bytes(), b"a"))
    for version, ts, rmse in ((1, 10, 1.0), (1, 30, 0.5), (2, 20, 0.7), (1, 5, 9.9)):
        score = Score("a", version, 100, 50, 0.9, rmse, 0.1, ts)
        f.apply(Record(TOPICS.scores, score.to_bytes()))
    entry = f.catalogue.get("a")
    assert entry is not None
    assert entry.scores[1].rmse == 0.5 and entry.scores[2].rmse == 0.7
    assert entry.last_score is not None and entry.last_score.ts == 30


def test_bad_records_are_skipped() -> None:
    f = feed()
    f.apply(Record(TOPICS.models, b'{"name": "x"}', b"x"))
    f.apply(Record(TOPICS.scores, b"not json"))
    f.apply(Record(TOPICS.scores, None))
    assert f.catalogue.models() == []


def test_loaded_only_when_marked() -> None:
    catalogue = Catalogue()
    assert not catalogue.loaded()
    catalogue.mark_loaded()
    assert catalogue.loaded()


def test_lookup_and_latest_without_snapshots() -> None:
    catalogue = Catalogue()
    for version in (1, 2, 3):
        catalogue.add_model(model("a", version, n_features=version))
    catalogue.add_model(model("b", 1))
    assert [(i.name, i.version) for i in catalogue.latest()] == [("a", 3), ("b", 1)]
    newest = catalogue.lookup("a")
    assert newest is not None and newest.version == 3
    second = catalogue.lookup("a", 2)
    assert second is not None and second.n_features == 2
    assert catalogue.lookup("a", 9) is None
    assert catalogue.lookup("zzz") is None


# --- the feed, on the in-memory driver ------------------------------------------------


def eventually(what: str, check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic(TOPICS.models, 2)
    broker.create_topic(TOPICS.scores, 2)
    return broker


@pytest.fixture
def running(broker: MemoryBroker) -> Iterator[CatalogueFeed]:
    feed = CatalogueFeed(broker.driver(), TOPICS, Catalogue(), scores_tail=3, reopen_s=0.05)
    yield feed
    feed.close()


def publish_model(broker: MemoryBroker, m: ModelVersion) -> None:
    broker.produce(TOPICS.models, m.to_bytes(), key=m.name.encode())


def publish_score(broker: MemoryBroker, model: str, version: int, ts: int, partition: int) -> None:
    score = Score(model, version, 100, 50, 0.9, 1.0 / ts, 0.1, ts)
    broker.produce(TOPICS.scores, score.to_bytes(), key=model.encode(), partition=partition)


def test_feed_is_loaded_once_models_are_read_to_their_end_at_start(
    broker: MemoryBroker, running: CatalogueFeed
) -> None:
    for version in (1, 2, 3):
        publish_model(broker, model("a", version))
    publish_model(broker, model("b", 1))
    running.start()
    eventually("loaded", running.catalogue.loaded)
    a = running.catalogue.get("a")
    assert a is not None and [v.version for v in a.versions] == [1, 2, 3]
    assert running.catalogue.lookup("b") is not None
    # and it follows what comes later: a new version, a tombstone
    publish_model(broker, model("a", 4))
    broker.produce(TOPICS.models, None, key=b"b")
    eventually("version 4", lambda: running.catalogue.lookup("a", 4) is not None)
    eventually("b forgotten", lambda: running.catalogue.lookup("b") is None)


def test_feed_reads_only_the_tail_of_scores(broker: MemoryBroker, running: CatalogueFeed) -> None:
    publish_model(broker, model("a", 1))
    for ts in range(1, 11):  # 10 old scores on partition 0; the tail is the last 3
        publish_score(broker, "a", ts, ts, partition=0)
    running.start()
    eventually("loaded", running.catalogue.loaded)

    def scores() -> dict[int, Score]:
        entry = running.catalogue.get("a")
        return dict(entry.scores) if entry is not None else {}

    eventually("the tail of scores", lambda: len(scores()) == 3)
    assert sorted(scores()) == [8, 9, 10]
    publish_score(broker, "a", 1, 99, partition=1)
    eventually("a new score", lambda: 1 in scores())
    assert scores()[1].ts == 99


def test_feed_waits_for_topics_that_do_not_exist_yet() -> None:
    broker = MemoryBroker()
    feed = CatalogueFeed(broker.driver(), TOPICS, Catalogue(), reopen_s=0.05).start()
    try:
        time.sleep(0.3)
        assert not feed.catalogue.loaded()
        broker.create_topic(TOPICS.models, 1)
        broker.create_topic(TOPICS.scores, 1)
        publish_model(broker, model("late", 1))
        eventually("loaded", feed.catalogue.loaded)
        eventually("the model", lambda: feed.catalogue.lookup("late") is not None)
    finally:
        feed.close()


def test_feed_rides_through_bus_faults(broker: MemoryBroker, running: CatalogueFeed) -> None:
    publish_model(broker, model("a", 1))
    running.start()
    eventually("loaded", running.catalogue.loaded)
    broker.fail_next("poll", TransientBusError("broker restarting"), times=5)
    publish_model(broker, model("a", 2))
    eventually("version 2 after the faults", lambda: running.catalogue.lookup("a", 2) is not None)
    assert broker.pending_faults("poll") == 0


def test_feed_reopens_after_a_failure_that_is_not_transient(
    broker: MemoryBroker, running: CatalogueFeed
) -> None:
    publish_model(broker, model("a", 1))
    broker.fail_next("end_offsets", BusError("not authorised"))
    running.start()
    eventually("loaded", running.catalogue.loaded)
    assert broker.calls["end_offsets"] >= 3  # failed, then opened both readers again
    assert running.catalogue.lookup("a") is not None


def test_close_stops_the_thread(broker: MemoryBroker) -> None:
    feed = CatalogueFeed(broker.driver(), TOPICS, Catalogue()).start()
    eventually("loaded", feed.catalogue.loaded)
    feed.close()
    assert not [t for t in threading.enumerate() if t.name == "catalogue"]
