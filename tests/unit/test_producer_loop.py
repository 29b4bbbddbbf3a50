"""The producer's send loop: counts, stops, flushes, failures and the GC, with a producer double."""

from __future__ import annotations

import gc
from itertools import islice

import pytest

from bus.messages import Point
from producer import loop
from producer.loop import (
    publish,
)
from producer.sources import DummySource
from tests.unit.producer_fakes import FakeClock, FakeProducer, StopAfter


def test_publish_sends_count_points_once_each_and_flushes_once() -> None:
    producer = FakeProducer()
    source = DummySource("cubic", 3, unlabelled=0.25, seed=3)
    summary = publish(source, producer, "pts", count=4321, now_ms=lambda: 1234, clock=FakeClock())
    assert producer.flushes == 1
    assert summary.sent == 4321 and summary.failed == 0 and summary.error is None
    assert not summary.stopped and not summary.exhausted
    points = producer.points()
    expected = list(islice(source, 4321))
    assert [p.id for p in points] == [p.id for p in expected]
    assert [(p.x, p.y) for p in points] == [(p.x, p.y) for p in expected]
    assert all(p.ts == 1234 for p in points)
    assert all(s.topic == "pts" for s in producer.sent)
    assert summary.labelled == sum(p.y is not None for p in points)
    assert summary.unlabelled == 4321 - summary.labelled


def test_publish_stops_when_the_source_ends() -> None:
    producer = FakeProducer()
    points = [Point(f"f-{i}", [float(i)], None, 77) for i in range(2500)]
    summary = publish(points, producer, "t", stamp=False)
    assert summary.sent == 2500 and summary.exhausted
    assert [p.ts for p in producer.points()] == [77] * 2500
    assert summary.labelled == 0


def test_publish_count_zero_sends_nothing() -> None:
    producer = FakeProducer()
    assert publish(DummySource(), producer, "t", count=0).sent == 0
    assert producer.sent == []


def test_publish_stops_on_the_flag_at_a_chunk_boundary() -> None:
    producer = FakeProducer()
    summary = publish(
        DummySource(), producer, "t", stop=StopAfter(producer, 2500), chunk=1000, clock=FakeClock()
    )
    assert summary.stopped
    assert summary.sent == len(producer.sent) == 3000
    assert producer.flushes == 1


def test_the_producer_is_flushed_every_so_many_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "FLUSH_EVERY", 2000)
    producer = FakeProducer()
    summary = publish(DummySource(), producer, "t", count=9000, chunk=1000, clock=FakeClock())
    assert summary.sent == 9000
    assert producer.flushes == 5  # after 2000, 4000, 6000, 8000 points, and at the end


def test_the_producer_is_flushed_every_second() -> None:
    clock = FakeClock()
    producer = FakeProducer(clock=clock)
    publish(DummySource(), producer, "t", count=3000, rate=1000, clock=clock, sleep=clock.sleep)
    assert 3 <= producer.flushes <= 4


def test_a_failed_delivery_stops_the_loop_and_counts_what_was_acknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop, "FLUSH_EVERY", 2000)
    producer = FakeProducer(fail_from=2500)
    summary = publish(
        DummySource(unlabelled=0.5), producer, "t", count=10_000, chunk=1000, clock=FakeClock()
    )
    assert len(producer.sent) == 4000  # the flush after 4000 failed: stop there
    assert producer.flushes == 2  # and no further flush claims the rest delivered
    assert summary.sent == 2000 and summary.failed == 2000
    assert summary.labelled == sum(p.y is not None for p in producer.points()[:2000])
    assert summary.error is not None and "NotLeaderForPartition" in summary.error


def test_a_bus_error_while_sending_ends_the_run_with_an_error() -> None:
    producer = FakeProducer(raise_from=700)
    summary = publish(DummySource(), producer, "t", count=5000, clock=FakeClock())
    assert summary.sent == len(producer.sent) == 700 and summary.failed == 0
    assert summary.labelled == 700
    assert summary.error is not None and "no metadata for the topic" in summary.error
    assert producer.flushes == 1  # what was sent before is flushed


def test_a_topic_without_partitions_is_a_bus_error() -> None:
    from core.errors import BusError

    with pytest.raises(BusError, match="has no partitions"):
        publish(DummySource(), FakeProducer(partitions=0), "t", count=10)


def test_progress_is_reported_after_each_chunk() -> None:
    calls: list[tuple[int, float]] = []
    clock = FakeClock()
    publish(
        DummySource(),
        FakeProducer(),
        "t",
        count=2500,
        chunk=1000,
        clock=clock,
        progress=lambda sent, elapsed: calls.append((sent, elapsed)),
    )
    assert [sent for sent, _ in calls] == [1000, 2000, 2500]


def test_publish_relaxes_the_gc_while_it_runs_and_restores_it() -> None:
    before = gc.get_threshold()
    seen: list[int] = []
    publish(
        DummySource(),
        FakeProducer(),
        "t",
        count=10,
        gc_threshold=12_345,
        progress=lambda sent, elapsed: seen.append(gc.get_threshold()[0]),
    )
    assert seen == [12_345]
    assert gc.get_threshold() == before
    publish(
        DummySource(),
        FakeProducer(),
        "t",
        count=10,
        gc_threshold=None,
        progress=lambda sent, elapsed: seen.append(gc.get_threshold()[0]),
    )
    assert seen[-1] == before[0]
