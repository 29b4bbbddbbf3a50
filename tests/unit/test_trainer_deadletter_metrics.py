"""The trainer's dead letters on its metrics: counted by reason class, like the scorer's."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bus.clients.memory import MemoryBroker
from core.shutdown import StopFlag
from core.telemetry import TelemetryConfig, reason_class
from tests.unit.test_trainer_step import (
    TOPICS,
    config,
    make,
    points,
    running,
    trained_all,
    wait_until,
)

SERIES = "streamscore_deadletters_total"
NOT_JSON = b'{"id":"half","y":1.0'
NO_X = b'{"id":"no-x","y":1.0}'


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic(TOPICS.points, 3)
    for topic in (TOPICS.models, TOPICS.trainer_state, TOPICS.deadletter):
        broker.create_topic(topic, 1)
    return broker


def deadletters(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """(service, reason) -> value of every dead-letter sample ``registry`` exports."""
    text = generate_latest(registry).decode()
    return {
        (sample.labels["service"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == SERIES
    }


def test_the_trainer_exports_its_dead_letters_by_reason_class(broker: MemoryBroker) -> None:
    good = points(300, seed=31)
    for i, value in enumerate([*good[:100], NOT_JSON, *good[100:200], NO_X, *good[200:]]):
        broker.produce(TOPICS.points, value, key=b"k%d" % i, partition=i % 3)
    stop = StopFlag()
    trainer = make(broker.driver(), config(), stop=stop)
    registry, _, _ = trainer.telemetry(TelemetryConfig("trainer", port=0))
    want = {("trainer", "bad_json"): 1.0, ("trainer", "missing_field"): 1.0}
    with running(trainer, stop):
        wait_until("every point trained on", lambda: trained_all(broker, 300))
        wait_until("both dead letters counted", lambda: deadletters(registry) == want)
    reasons = [(r.header("error") or b"").decode() for r in broker.records(TOPICS.deadletter)]
    assert sorted(map(reason_class, reasons)) == ["bad_json", "missing_field"]
    assert deadletters(registry) == want
    assert trainer.stats.deadletters == 2
