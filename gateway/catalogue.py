"""The model catalogue: every model version seen on ``models``, and the latest scores.

`Catalogue` is plain in-memory state that the resources read; `CatalogueFeed` is
the background thread that fills it from Kafka: ``models`` (compacted) read from
the beginning and ``scores`` from near its end, every partition assigned, no
consumer group, so each gateway worker has the whole picture.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from bus.clients import make_consumer
from bus.messages import ModelVersion, Score
from bus.settings import KafkaSettings
from bus.topics import Topics
from streamscore.errors import MessageError

log = logging.getLogger(__name__)

#: How many of the newest ``scores`` records per partition are read at start.
SCORES_TAIL = 1000

#: Most versions kept per model (their metadata only; the oldest go first).
MAX_VERSIONS = 10_000


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """What the gateway keeps of one model version (its params stay with the scorer)."""

    name: str
    version: int
    kind: str
    n_features: int
    created_at: int
    trained_on: Mapping[str, Any]
    train_score: Mapping[str, float | None]

    @classmethod
    def of(cls, model: ModelVersion) -> VersionInfo:
        """The metadata of ``model``."""
        return cls(
            name=model.name,
            version=model.version,
            kind=model.kind,
            n_features=model.n_features,
            created_at=model.created_at,
            trained_on=model.trained_on,
            train_score=model.train_score,
        )


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A snapshot of one model: its versions (ascending) and their latest scores."""

    name: str
    versions: tuple[VersionInfo, ...]
    scores: Mapping[int, Score] = field(default_factory=dict)
    last_score: Score | None = None

    @property
    def latest(self) -> VersionInfo:
        """The newest version."""
        return self.versions[-1]

    def version(self, number: int) -> VersionInfo | None:
        """Version ``number``, or None if the catalogue has not seen it."""
        for info in self.versions:
            if info.version == number:
                return info
        return None


class Catalogue:
    """Thread-safe, in-memory: what the gateway knows about models (fed by `CatalogueFeed`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, dict[int, VersionInfo]] = {}
        self._scores: dict[str, dict[int, Score]] = {}
        self._last_score: dict[str, Score] = {}
        self._loaded = threading.Event()

    # --- writing -------------------------------------------------------------------

    def add_model(self, model: ModelVersion | VersionInfo) -> None:
        """Remember a model version (seen again: replaced)."""
        info = model if isinstance(model, VersionInfo) else VersionInfo.of(model)
        with self._lock:
            versions = self._versions.setdefault(info.name, {})
            versions[info.version] = info
            while len(versions) > MAX_VERSIONS:
                del versions[min(versions)]

    def remove_model(self, name: str) -> None:
        """Forget a model (a tombstone on ``models``)."""
        with self._lock:
            self._versions.pop(name, None)
            self._scores.pop(name, None)
            self._last_score.pop(name, None)

    def add_score(self, score: Score) -> None:
        """Remember the newest score of a model version."""
        with self._lock:
            by_version = self._scores.setdefault(score.model, {})
            known = by_version.get(score.version)
            if known is None or known.ts <= score.ts:
                by_version[score.version] = score
                while len(by_version) > MAX_VERSIONS:
                    del by_version[min(by_version)]
            last = self._last_score.get(score.model)
            if last is None or last.ts <= score.ts:
                self._last_score[score.model] = score

    def mark_loaded(self) -> None:
        """Say that ``models`` has been read up to where it ended at start."""
        self._loaded.set()

    # --- reading -------------------------------------------------------------------

    def loaded(self) -> bool:
        """True once the models that existed at start are all known."""
        return self._loaded.is_set()

    def latest(self) -> list[VersionInfo]:
        """The newest version of every model (cheap: for checks on the request path)."""
        with self._lock:
            return [versions[max(versions)] for versions in self._versions.values() if versions]

    def lookup(self, name: str, version: int | None = None) -> VersionInfo | None:
        """Version ``version`` (None: the newest) of model ``name``, or None if unseen."""
        with self._lock:
            versions = self._versions.get(name)
            if not versions:
                return None
            return versions.get(max(versions) if version is None else version)

    def get(self, name: str) -> ModelEntry | None:
        """A snapshot of model ``name``, or None."""
        with self._lock:
            return self._entry(name)

    def models(self) -> list[ModelEntry]:
        """Snapshots of every model, by name."""
        with self._lock:
            return [e for e in map(self._entry, sorted(self._versions)) if e is not None]

    def _entry(self, name: str) -> ModelEntry | None:
        versions = self._versions.get(name)
        if not versions:
            return None
        return ModelEntry(
            name=name,
            versions=tuple(versions[v] for v in sorted(versions)),
            scores=dict(self._scores.get(name, {})),
            last_score=self._last_score.get(name),
        )


class CatalogueFeed:
    """A thread that keeps a `Catalogue` up to date from ``models`` and ``scores``."""

    def __init__(
        self,
        settings: KafkaSettings,
        topics: Topics,
        catalogue: Catalogue,
        *,
        consumer_factory: Any = make_consumer,
    ) -> None:
        self._settings = settings
        self._topics = topics
        self.catalogue = catalogue
        self._consumer_factory = consumer_factory
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> CatalogueFeed:
        """Start reading in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="catalogue", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop reading."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def apply(self, record: ConsumerRecord) -> None:
        """Apply one ``models`` or ``scores`` record; bad ones are logged and skipped."""
        try:
            if record.topic == self._topics.models:
                if record.value is None:
                    if record.key:
                        self.catalogue.remove_model(bytes(record.key).decode("utf-8", "replace"))
                    return
                self.catalogue.add_model(ModelVersion.from_bytes(record.value))
            else:
                self.catalogue.add_score(Score.from_bytes(record.value))
        except MessageError as exc:
            log.warning("skipped %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = self._consumer_factory(self._settings, group_id=None)
                self._follow(consumer)
            except Exception as exc:
                log.warning("catalogue feed: %s; retrying", exc)
                self._stop.wait(1.0)
            finally:
                if consumer is not None:
                    consumer.close(autocommit=False, timeout_ms=1000)

    def _partitions(self, consumer: Any, topic: str) -> list[TopicPartition]:
        while not self._stop.is_set():
            found = consumer.partitions_for_topic(topic)
            if found:
                return [TopicPartition(topic, p) for p in sorted(found)]
            log.info("waiting for topic %r to exist", topic)
            self._stop.wait(1.0)
        return []

    def _follow(self, consumer: Any) -> None:
        models = self._partitions(consumer, self._topics.models)
        scores = self._partitions(consumer, self._topics.scores)
        if self._stop.is_set():
            return
        consumer.assign(models + scores)
        consumer.seek_to_beginning(*models)
        ends = consumer.end_offsets(scores)
        starts = consumer.beginning_offsets(scores)
        for tp in scores:
            consumer.seek(tp, max(starts[tp], ends[tp] - SCORES_TAIL))
        targets = consumer.end_offsets(models)
        while not self._stop.is_set():
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    self.apply(record)
            if not self.catalogue.loaded() and all(
                consumer.position(tp) >= targets[tp] for tp in models
            ):
                self.catalogue.mark_loaded()
                log.info("catalogue loaded: %d models", len(self.catalogue.latest()))
