"""The model catalogue: every model version seen on ``models``, and the latest scores.

`Catalogue` is plain in-memory state that the resources read; `CatalogueFeed` is
the background thread that fills it from Kafka through two `bus.table.Table`
readers: ``models`` (compacted) from its beginning and ``scores`` from near its
end, every partition, no consumer group, so each gateway worker has the whole
picture. The feed never gives up: after a bus failure it opens the readers again.

The catalogue lists exactly the versions a scorer can serve: a model message is
checked as the scorer checks it (contract, signature with ``STREAMSCORE_MODEL_KEY``,
params through `regressors.regressor_from_dict`) and refused the same way, a
version older than the newest one of its model is ignored (the scorer never loads
it either), and only the newest ``history`` versions are kept
(``STREAMSCORE_MODEL_HISTORY``, the scorer's setting too). Each version keeps its
validated regressor, so the gateway can score it on a labelled batch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bus.clients.base import Driver, Record
from bus.messages import ModelVersion, Score
from bus.signing import ModelKey, verify
from bus.table import Table
from bus.topics import Topics
from core.errors import BusError, StreamscoreError
from core.shutdown import StopFlag
from regressors import Regressor, regressor_for

log = logging.getLogger(__name__)

#: How many of the newest ``scores`` records per partition are read at start.
SCORES_TAIL = 1000

#: How long one reader waits for records before the other one is read: a new model or
#: score is listed within about twice this. Each wait is a poll of its own client (on
#: kafka-python about a millisecond of CPU even when nothing comes), in every worker.
POLL_S = 0.5

#: How long the feed waits before opening its readers again after a bus failure.
REOPEN_S = 1.0

#: Versions kept per model by default (the scorer's default history).
HISTORY = 10


def validated(model: ModelVersion, key: ModelKey | None) -> Regressor:
    """The regressor of a model message, checked as the scorer checks it; else raise.

    MessageError for a signature that does not match ``key``, ModelError for params
    that do not validate or do not match the message's kind and n_features.
    """
    if key is not None:
        verify(model, key)
    regressor = regressor_for(
        model.params,
        kind=model.kind,
        n_features=model.n_features,
        where=f"model {model.name!r} v{model.version}",
    )
    return regressor


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
    regressor: Regressor | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, model: ModelVersion, regressor: Regressor | None = None) -> VersionInfo:
        """The metadata of ``model`` (and its validated regressor)."""
        return cls(
            name=model.name,
            version=model.version,
            kind=model.kind,
            n_features=model.n_features,
            created_at=model.created_at,
            trained_on=model.trained_on,
            train_score=model.train_score,
            regressor=regressor,
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

    def __init__(self, *, history: int = HISTORY, key: ModelKey | None = None) -> None:
        self.history = history
        self._key = key
        self._lock = threading.Lock()
        self._versions: dict[str, dict[int, VersionInfo]] = {}
        self._scores: dict[str, dict[int, Score]] = {}
        self._last_score: dict[str, Score] = {}
        self._loaded = threading.Event()

    # --- writing -------------------------------------------------------------------

    def add_model(self, model: ModelVersion | VersionInfo) -> bool:
        """Remember a model version if the scorer would load it; True if it was kept.

        A model message that the scorer refuses raises (MessageError, ModelError);
        a version not newer than the model's newest is ignored, as the scorer does.
        """
        if isinstance(model, VersionInfo):
            info = model
        else:
            info = VersionInfo.of(model, validated(model, self._key))
        with self._lock:
            versions = self._versions.setdefault(info.name, {})
            if versions and info.version <= max(versions):
                return False
            versions[info.version] = info
            while len(versions) > self.history:
                del versions[min(versions)]
            return True

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
                while len(by_version) > self.history:
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

    def wait_loaded(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until `loaded`; True if it is."""
        return self._loaded.wait(timeout_s)

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
    """A thread that keeps a `Catalogue` up to date from ``models`` and ``scores``.

    ``models`` is read from its beginning: once it is read up to where it ended
    when the feed started, the catalogue is marked loaded. ``scores`` is read from
    its last ``scores_tail`` records per partition on. Topics that do not exist yet
    are waited for.
    """

    def __init__(
        self,
        driver: Driver,
        topics: Topics,
        catalogue: Catalogue,
        *,
        scores_tail: int = SCORES_TAIL,
        reopen_s: float = REOPEN_S,
    ) -> None:
        self._driver = driver
        self._topics = topics
        self.catalogue = catalogue
        self._scores_tail = scores_tail
        self._reopen_s = reopen_s
        self._stop = StopFlag()
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

    def apply(self, record: Record) -> None:
        """Apply one ``models`` or ``scores`` record; bad ones are logged and skipped."""
        try:
            if record.topic == self._topics.models:
                if record.value is None:
                    if record.key:
                        self.catalogue.remove_model(record.key.decode("utf-8", "replace"))
                    return
                self.catalogue.add_model(ModelVersion.from_bytes(record.value))
            elif record.value is not None:
                self.catalogue.add_score(Score.from_bytes(record.value))
        except StreamscoreError as exc:  # what the scorer refuses (MessageError, ModelError)
            log.warning("skipped %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            models = Table(self._driver, self._topics.models, topic_wait_s=None, stop=self._stop)
            scores = Table(
                self._driver,
                self._topics.scores,
                tail=self._scores_tail,
                topic_wait_s=None,
                stop=self._stop,
            )
            try:
                self._follow(models, scores)
            except BusError as exc:
                log.warning("catalogue feed: %s; reading again in %.0f s", exc, self._reopen_s)
            except Exception:  # a bug must not end the feed of a running gateway
                log.exception("catalogue feed failed; reading again in %.0f s", self._reopen_s)
            finally:
                models.close()
                scores.close()
            self._stop.wait(self._reopen_s)

    def _follow(self, models: Table, scores: Table) -> None:
        models.open()
        scores.open()
        if self._stop.is_set():
            return
        while not self._stop.is_set():
            for record in models.poll(POLL_S):
                self.apply(record)
            for record in scores.poll(POLL_S):
                self.apply(record)
            if not self.catalogue.loaded() and models.caught_up():
                self.catalogue.mark_loaded()
                log.info("catalogue loaded: %d models", len(self.catalogue.latest()))
