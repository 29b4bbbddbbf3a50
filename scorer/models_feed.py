"""Following the compacted ``models`` topic into the model registry."""

from __future__ import annotations

import logging
import time

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from bus.clients import make_consumer
from bus.deadletter import DeadLetters
from bus.messages import ModelVersion
from bus.settings import KafkaSettings
from scorer.registry import ModelRegistry, load_model
from streamscore.errors import BusError, StreamscoreError

log = logging.getLogger(__name__)


class ModelFeed:
    """Reads every partition of ``models`` from the start (no consumer group) into a registry.

    A model message that breaks the contract, or whose params do not validate, goes
    to the dead-letter topic and is never loaded.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        registry: ModelRegistry,
        deadletters: DeadLetters,
    ) -> None:
        self._registry = registry
        self._deadletters = deadletters
        self._consumer: KafkaConsumer = make_consumer(settings, group_id=None)
        partitions = self._consumer.partitions_for_topic(topic)
        if not partitions:
            raise BusError(f"topic {topic!r} does not exist; run `streamscore topics` first")
        self._partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._partitions)
        self._consumer.seek_to_beginning(*self._partitions)

    def catch_up(self, timeout_s: float = 30.0) -> None:
        """Load everything already on the topic (the latest version of every name)."""
        end = self._consumer.end_offsets(self._partitions)
        deadline = time.monotonic() + timeout_s
        while any(self._consumer.position(tp) < end[tp] for tp in self._partitions):
            if time.monotonic() > deadline:
                raise BusError(f"could not read the models topic to its end in {timeout_s:.0f}s")
            self.poll(200)
        log.info("models loaded: %s", describe(self._registry) or "none yet")

    def poll(self, timeout_ms: int) -> int:
        """Load what arrived; return how many new versions went live."""
        loaded = 0
        for records in self._consumer.poll(timeout_ms=timeout_ms).values():
            for record in records:
                if record.value is None:
                    name = record.key.decode(errors="replace") if record.key else ""
                    log.info("model %r deleted from the models topic", name)
                    self._registry.remove(name)
                    continue
                try:
                    model = load_model(ModelVersion.from_bytes(record.value))
                except StreamscoreError as exc:
                    self._deadletters.send(record, f"unusable model: {exc}")
                    continue
                if self._registry.add(model):
                    loaded += 1
                    log.info("model %s v%d is live", model.name, model.version)
        return loaded

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()


def describe(registry: ModelRegistry) -> str:
    """``name vN, name vM`` for the live models."""
    return ", ".join(f"{m.name} v{m.version}" for m in registry.latest().values())
