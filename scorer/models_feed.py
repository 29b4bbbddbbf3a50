"""Following the compacted ``models`` topic into the model registry."""

from __future__ import annotations

import logging

from bus.clients.base import Driver, Producer, Record
from bus.deadletter import DeadLetters
from bus.messages import ModelVersion
from bus.signing import ModelKey
from bus.table import Table
from core.errors import StreamscoreError
from core.shutdown import StopFlag
from scorer.registry import ModelRegistry, load_model

log = logging.getLogger(__name__)


class ModelFeed:
    """Reads every partition of ``models`` from the start (no consumer group) into a registry.

    A model message that breaks the contract, whose params do not validate, or
    (with a model ``key``) whose signature does not match goes to the dead-letter
    topic and is never loaded. Dead letters of models are rare: they get a
    producer of their own, flushed at once.
    """

    def __init__(
        self,
        driver: Driver,
        topic: str,
        registry: ModelRegistry,
        deadletter_topic: str,
        *,
        key: ModelKey | None = None,
        stop: StopFlag | None = None,
    ) -> None:
        self._driver = driver
        self._key = key
        self._registry = registry
        self._deadletter_topic = deadletter_topic
        self._table = Table(driver, topic, stop=stop)
        self._producer: Producer | None = None
        self._deadletters: DeadLetters | None = None

    def catch_up(self, timeout_s: float = 30.0) -> None:
        """Load everything already on the topic (the latest version of every name)."""
        self._table.open()
        self._load(self._table.catch_up(timeout_s))
        log.info("models loaded: %s", describe(self._registry) or "none yet")

    def poll(self, timeout_s: float) -> int:
        """Load what arrived; return how many new versions went live."""
        return self._load(self._table.poll(timeout_s))

    def _load(self, records: list[Record]) -> int:
        loaded = 0
        for record in records:
            if record.value is None:
                name = record.key.decode(errors="replace") if record.key else ""
                log.info("model %r deleted from the models topic", name)
                self._registry.remove(name)
                continue
            try:
                model = load_model(ModelVersion.from_bytes(record.value), self._key)
            except StreamscoreError as exc:
                self._deadletter(record, f"unusable model: {exc}")
                continue
            if self._registry.add(model):
                loaded += 1
                log.info("model %s v%d is live", model.name, model.version)
        return loaded

    def _deadletter(self, record: Record, reason: str) -> None:
        if self._deadletters is None:
            self._producer = self._driver.producer(linger_ms=0)
            self._deadletters = DeadLetters(self._producer, self._deadletter_topic, "scorer")
        assert self._producer is not None
        self._deadletters.send(record, reason)
        self._producer.flush()

    def close(self) -> None:
        """Close the reader (and the dead-letter producer, if one was made)."""
        self._table.close()
        if self._producer is not None:
            self._producer.close()


def describe(registry: ModelRegistry) -> str:
    """``name vN, name vM`` for the live models."""
    return ", ".join(f"{m.name} v{m.version}" for m in registry.latest().values())
