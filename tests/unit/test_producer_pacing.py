"""The producer's pacing: the token bucket and publish at a rate."""

from __future__ import annotations

import pytest

from producer.loop import (
    BURST_SECONDS,
    Pacer,
    publish,
)
from producer.sources import DummySource
from tests.unit.producer_fakes import FakeClock, FakeProducer


def test_pacer_grants_tokens_at_the_rate() -> None:
    clock = FakeClock()
    assert Pacer(1000, clock=clock).burst == 100  # 100 ms worth by default
    assert Pacer(5, clock=clock).burst == 1
    pacer = Pacer(1000, clock=clock, burst=10)
    assert pacer.grant(100) == 1  # one token to start with
    assert pacer.grant(100) == 0
    assert pacer.delay() == pytest.approx(0.001)
    clock.now += 0.005
    assert pacer.grant(100) == 5
    assert pacer.grant(3) == 0
    clock.now += 1.0  # a long pause: at most a burst piles up
    assert pacer.grant(100) == 10
    clock.now += 0.0025
    assert pacer.grant(1) == 1
    assert pacer.grant(100) == 1
    assert pacer.delay() == pytest.approx(0.0005)


def test_pacer_refuses_a_bad_rate() -> None:
    for rate in (0, -5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rate"):
            Pacer(rate, clock=FakeClock())


@pytest.mark.parametrize(("rate", "n"), [(1000, 5000), (10_000, 30_000), (250, 600)])
def test_publish_paced_sends_at_the_rate(rate: int, n: int) -> None:
    clock = FakeClock()
    producer = FakeProducer(clock=clock)
    summary = publish(
        DummySource(), producer, "points", count=n, rate=rate, clock=clock, sleep=clock.sleep
    )
    assert summary.sent == n
    assert summary.elapsed == pytest.approx(n / rate, rel=0.005)
    assert summary.rate == pytest.approx(rate, rel=0.005)
    # never ahead of the schedule by more than a burst, never behind it by more either
    start = producer.sent[0].at
    burst = max(1, int(rate * BURST_SECONDS))
    for i in range(0, n, max(1, n // 97)):
        on_time = (producer.sent[i].at - start) * rate
        assert on_time - burst - 1 <= i <= on_time + burst + 1


def test_publish_paced_does_not_bank_the_wait_for_metadata() -> None:
    clock = FakeClock()

    class SlowMetadata(FakeProducer):
        looked_up = False

        def partition_count(self, topic: str) -> int:
            if not self.looked_up:
                self.looked_up = True
                clock.now += 1.0  # the first look-up waits for the cluster
            return super().partition_count(topic)

    producer = SlowMetadata(clock=clock)
    summary = publish(
        DummySource(), producer, "t", count=2000, rate=1000, clock=clock, sleep=clock.sleep
    )
    assert summary.elapsed == pytest.approx(2.0, rel=0.005)
    assert producer.sent[101].at - producer.sent[0].at >= 0.1  # no burst of banked tokens


def test_publish_paced_keeps_the_rate_when_sleeps_overshoot() -> None:
    clock = FakeClock()

    def late_sleep(seconds: float) -> None:
        clock.now += seconds + 0.03  # a loaded machine wakes the loop 30 ms late

    summary = publish(
        DummySource(), FakeProducer(), "t", count=10_000, rate=1000, clock=clock, sleep=late_sleep
    )
    assert summary.rate == pytest.approx(1000, rel=0.01)


def test_publish_unpaced_never_sleeps() -> None:
    producer = FakeProducer()

    def no_sleep(seconds: float) -> None:
        raise AssertionError("slept")

    summary = publish(DummySource(), producer, "points", count=3500, sleep=no_sleep)
    assert summary.sent == 3500
