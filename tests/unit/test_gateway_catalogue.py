"""The gateway's model catalogue: what it keeps from ``models`` and ``scores`` records."""

from __future__ import annotations

from dataclasses import dataclass

from bus.messages import ModelVersion, Score
from bus.settings import KafkaSettings
from bus.topics import Topics
from gateway.catalogue import Catalogue, CatalogueFeed

TOPICS = Topics.with_prefix("t.")


@dataclass
class Record:
    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int = 0
    offset: int = 0


def model(name: str, version: int, n_features: int = 2) -> ModelVersion:
    return ModelVersion(
        name=name,
        version=version,
        kind="polynomial",
        n_features=n_features,
        params={"coef": [1.0] * 6},
        trained_on={"count": 10 * version},
        train_score={"r2": 0.5, "rmse": 1.0, "mae": 0.5},
        created_at=version,
    )


def feed() -> CatalogueFeed:
    return CatalogueFeed(KafkaSettings(), TOPICS, Catalogue())


def test_keeps_every_version_seen_in_order() -> None:
    f = feed()
    for version in (2, 1, 3):
        f.apply(Record(TOPICS.models, model("poly", version).to_bytes(), b"poly"))
    entry = f.catalogue.get("poly")
    assert entry is not None
    assert [v.version for v in entry.versions] == [1, 2, 3]
    assert entry.latest.version == 3 and entry.latest.kind == "polynomial"
    assert entry.version(2) is not None and entry.version(2).trained_on == {"count": 20}
    assert entry.version(9) is None


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
    assert f.catalogue.models() == []


def test_loaded_only_when_marked() -> None:
    catalogue = Catalogue()
    assert not catalogue.loaded()
    catalogue.mark_loaded()
    assert catalogue.loaded()


def test_lookup_and_latest_without_snapshots() -> None:
    catalogue = Catalogue()
    for version in (1, 3, 2):
        catalogue.add_model(model("a", version, n_features=version))
    catalogue.add_model(model("b", 1))
    assert [(i.name, i.version) for i in catalogue.latest()] == [("a", 3), ("b", 1)]
    newest = catalogue.lookup("a")
    assert newest is not None and newest.version == 3
    second = catalogue.lookup("a", 2)
    assert second is not None and second.n_features == 2
    assert catalogue.lookup("a", 9) is None
    assert catalogue.lookup("zzz") is None
