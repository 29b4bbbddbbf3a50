"""The producer's send loop, pacer, encoding, partitioner and settings, with a producer double."""

from __future__ import annotations

import gc
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
import pytest

from bus.clients.base import Headers, Producer, TopicPartition, TransientBusError
from bus.messages import Point
from core.errors import ConfigError, MessageError
from producer import loop, partitioning
from producer.__main__ import format_summary, parse_config
from producer.config import ProducerConfig
from producer.loop import (
    BURST_SECONDS,
    Pacer,
    PublishSummary,
    encode_point,
    entity_keys,
    key_partition,
    murmur2,
    point_key,
    publish,
)
from producer.progress import ProgressReporter, render_bar
from producer.sources import BadRows, DummySource, KeyedPoint

# --- doubles ------------------------------------------------------------------------


class FakeClock:
    """A clock that only moves when told to (or when the loop sleeps)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


@dataclass
class Sent:
    topic: str
    value: bytes
    key: bytes | None
    partition: int | None
    at: float


@dataclass(eq=False)
class FakeProducer(Producer):
    """Records what it is sent; the first flush after record ``fail_from`` was sent fails,
    and sends fail from record ``raise_from`` on."""

    clock: Callable[[], float] = lambda: 0.0
    partitions: int = 3
    fail_from: int | None = None
    raise_from: int | None = None
    sent: list[Sent] = field(default_factory=list)
    flushes: int = 0
    flushed: int = 0

    def partition_count(self, topic: str) -> int:
        return self.partitions

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        if self.raise_from is not None and len(self.sent) >= self.raise_from:
            raise TransientBusError("no metadata for the topic")
        assert value is not None
        self.sent.append(Sent(topic, value, key, partition, self.clock()))

    def flush(self, timeout_s: float = 30.0) -> None:
        self.flushes += 1
        before, self.flushed = self.flushed, len(self.sent)
        if self.fail_from is not None and before <= self.fail_from < self.flushed:
            raise TransientBusError("NotLeaderForPartition: the leader moved")

    def points(self) -> list[Point]:
        return [Point.from_bytes(s.value) for s in self.sent]

    def init_transactions(self) -> None:
        raise NotImplementedError

    def begin_transaction(self) -> None:
        raise NotImplementedError

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group: object
    ) -> None:
        raise NotImplementedError

    def commit_transaction(self) -> None:
        raise NotImplementedError

    def abort_transaction(self) -> None:
        raise NotImplementedError

    def close(self, timeout_s: float = 10.0) -> None:
        pass


class StopAfter:
    """A stop flag that is set once the producer has ``n`` records."""

    def __init__(self, producer: FakeProducer, n: int) -> None:
        self.producer = producer
        self.n = n

    def is_set(self) -> bool:
        return len(self.producer.sent) >= self.n

    def wait(self, timeout: float) -> bool:
        return self.is_set()


# --- encoding -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "point",
    [
        Point("p-000017", [0.25, -1.5], 3.71),
        Point("p-1", [1e-300, 1e12, -1e12, -0.0], None),
        Point('quote"back\\slash\nnew', [0.1], 2.0),
        Point("unicodé-✓", [3.0], -0.5),
    ],
)
def test_encode_point_is_the_contract_json(point: Point) -> None:
    for ts in (None, 1_700_000_000_123):
        raw = encode_point(point, ts)
        assert json.loads(raw) == {**point.to_json(), **({"ts": ts} if ts else {})}
        back = Point.from_bytes(raw)
        assert (back.id, back.x, back.y, back.ts) == (point.id, point.x, point.y, ts)


def test_encode_point_accepts_ints_and_numpy_numbers() -> None:
    point = Point("n", [1, np.float32(0.5), np.int64(3)], np.float64(2.5))  # type: ignore[list-item]
    assert Point.from_bytes(encode_point(point, 5)) == Point("n", [1.0, 0.5, 3.0], 2.5, 5)


@pytest.mark.parametrize(
    "point",
    [
        Point("a", [float("nan")], 1.0),
        Point("b", [1.0], float("inf")),
        Point("c", [-float("inf"), 1.0]),
        Point("d", []),
        Point("e", [1, float("nan")]),  # the slow path checks too
        Point("f", [1.0, 1.5e12]),
        Point("g", [-2e12]),
        Point("h", [1.0], -1.0000001e12),
        Point("i", [1.0] * 10_001),
        Point("", [1.0]),
        Point("j" * 129, [1.0]),
    ],
)
def test_encode_point_refuses_what_the_contract_refuses(point: Point) -> None:
    with pytest.raises(MessageError, match=repr(point.id[:40])):
        encode_point(point, None)


# --- the pacer ----------------------------------------------------------------------


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


# --- publish ------------------------------------------------------------------------


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


def test_unkeyed_points_go_to_one_partition_per_chunk_round_robin() -> None:
    producer = FakeProducer(partitions=4)
    publish(DummySource(), producer, "t", count=5000, chunk=500)
    assert all(s.key is None for s in producer.sent)
    per_chunk = [{s.partition for s in producer.sent[i : i + 500]} for i in range(0, 5000, 500)]
    assert all(len(parts) == 1 for parts in per_chunk)
    assert [parts.pop() for parts in per_chunk] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_entity_keys_cycle_and_each_key_keeps_its_partition() -> None:
    producer = FakeProducer(partitions=6)
    publish(DummySource(), producer, "t", count=3000, keys=entity_keys(7))
    keys = [s.key for s in producer.sent]
    assert keys[:8] == [f"entity-{i}".encode() for i in range(7)] + [b"entity-0"]
    partition_of: dict[bytes | None, set[int | None]] = {}
    for s in producer.sent:
        partition_of.setdefault(s.key, set()).add(s.partition)
    assert len(partition_of) == 7
    assert all(len(parts) == 1 for parts in partition_of.values())
    assert len({p for parts in partition_of.values() for p in parts}) > 1
    # the Java client's (and kafka-python's) default partitioner would choose the same
    for key, parts in partition_of.items():
        assert key is not None
        assert parts == {(murmur2(key) & 0x7FFFFFFF) % 6} == {key_partition(key, 6)}


# Kafka's own test vectors for Utils.murmur2 (signed 32-bit results in Java).
MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "java"), MURMUR2.items())
def test_murmur2_is_kafkas(key: bytes, java: int) -> None:
    assert murmur2(key) == java & 0xFFFFFFFF
    assert key_partition(key, 7) == (java & 0x7FFFFFFF) % 7


def test_new_partitions_are_used_after_a_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    producer = FakeProducer(clock=clock, partitions=2)
    monkeypatch.setattr(partitioning, "PARTITIONS_REFRESH_S", 5.0)

    class Grows(FakeProducer):
        def partition_count(self, topic: str) -> int:
            return 2 if clock.now < 1003 else 5

    producer = Grows(clock=clock)
    summary = publish(
        DummySource(), producer, "t", count=20_000, rate=2000, clock=clock, sleep=clock.sleep
    )
    assert summary.sent == 20_000
    early = {s.partition for s in producer.sent if s.at < 1005}
    late = {s.partition for s in producer.sent if s.at >= 1006}
    assert early == {0, 1} and late == {0, 1, 2, 3, 4}


def test_points_bring_their_own_keys_unless_told_otherwise() -> None:
    points = [KeyedPoint("a", [1.0], 1.0, None, "dev-1"), Point("b", [2.0], 2.0)]
    producer = FakeProducer()
    publish(points, producer, "t")
    assert [s.key for s in producer.sent] == [b"dev-1", None]
    producer = FakeProducer()
    publish(points, producer, "t", keys=None)
    assert [s.key for s in producer.sent] == [None, None]
    assert point_key(0, points[0]) == "dev-1" and point_key(1, points[1]) is None


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


# --- settings and summary -----------------------------------------------------------


def test_config_from_env_and_flags_on_top() -> None:
    env = {
        "STREAMSCORE_PRODUCER_FUNCTION": "linear",
        "STREAMSCORE_PRODUCER_RATE": "1000",
        "STREAMSCORE_PRODUCER_COUNT": "50",
        "STREAMSCORE_PRODUCER_COLUMNS": "a, b",
        "STREAMSCORE_PRODUCER_FILE": "x.csv",
        "STREAMSCORE_PRODUCER_KEEP_TS": "true",
    }
    config = ProducerConfig.from_env(env)
    assert (config.function, config.rate, config.count) == ("linear", 1000.0, 50)
    assert config.columns == ("a", "b") and config.keep_ts
    flags = parse_config(["--rate", "250", "-n", "7", "--no-keep-ts", "--keys", "4"], env)
    assert (flags.function, flags.rate, flags.count, flags.keep_ts) == ("linear", 250.0, 7, False)
    key_fn = flags.key_fn()
    assert key_fn is not None and key_fn(5, Point("p", [1.0])) == "entity-1"
    assert ProducerConfig().key_fn() is point_key
    assert ProducerConfig(keys="none").key_fn() is None
    assert ProducerConfig() == ProducerConfig.from_env({})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAMSCORE_PRODUCER_RATE": "fast"}, "STREAMSCORE_PRODUCER_RATE"),
        ({"STREAMSCORE_PRODUCER_UNLABELLED": "1.5"}, "--unlabelled / STREAMSCORE_PRODUCER_UN"),
        ({"STREAMSCORE_PRODUCER_KEYS": "some"}, "--keys"),
        ({"STREAMSCORE_PRODUCER_FUNCTION": "sine"}, "STREAMSCORE_PRODUCER_FUNCTION"),
        ({"STREAMSCORE_PRODUCER_COLUMNS": "a"}, "without --file"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ProducerConfig.from_env(env)


def test_run_ids_prefix_the_ids() -> None:
    assert ProducerConfig().id_prefix_for_run() == "p-"
    assert ProducerConfig(run_id="r7").id_prefix_for_run() == "r7-p-"
    assert ProducerConfig(run_id="auto").id_prefix_for_run(lambda: "abc123") == "abc123-p-"


def test_summary_lists_the_first_bad_rows() -> None:
    bad = BadRows("data.csv")
    for line in range(2, 30):
        bad.add(line, f"bad thing {line}")
    summary = PublishSummary(
        sent=1000, labelled=900, failed=0, elapsed=0.5, stopped=True, exhausted=False
    )
    text = format_summary(summary, bad, "points")
    assert text.splitlines()[0] == (
        "sent 1,000 points to 'points' in 0.50 s (2,000 points/s); 900 labelled, 100 unlabelled"
    )
    assert "skipped 28 bad row(s) of data.csv:" in text
    assert "  line 2: bad thing 2" in text and "  line 11: bad thing 11" in text
    assert "line 12:" not in text and "... and 18 more" in text
    assert "stopped on request" in text


def test_producer_tuning_is_passed_only_when_set() -> None:
    assert ProducerConfig().producer_overrides() == {}
    env = {"STREAMSCORE_PRODUCER_LINGER_MS": "20", "STREAMSCORE_PRODUCER_BATCH_SIZE": "65536"}
    assert ProducerConfig.from_env(env).producer_overrides() == {
        "linger_ms": 20,
        "batch_size": 65536,
    }
    with pytest.raises(ConfigError, match="STREAMSCORE_PRODUCER_BATCH_SIZE"):
        ProducerConfig.from_env({"STREAMSCORE_PRODUCER_BATCH_SIZE": "10"})


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


# --- progress -----------------------------------------------------------------------


def test_progress_bar_on_a_terminal_is_redrawn_in_place_and_throttled() -> None:
    stream = io.StringIO()
    clock = FakeClock(0.0)
    reporter = ProgressReporter(stream, total=1000, tty=True, interval=0.2, clock=clock)
    reporter(100, 0.1)  # too early: nothing drawn
    assert stream.getvalue() == ""
    clock.now = 0.25
    reporter(500, 0.25)
    clock.now = 0.3
    reporter(600, 0.3)  # throttled
    reporter.finish()
    text = stream.getvalue()
    assert text.count("\r") == 1 and text.endswith("\n")
    assert "500/1,000" in text and " 50% " in text and "2,000 points/s" in text
    assert render_bar(10, None, 2.0) == "10 points sent, 5 points/s, 2.0 s"


def test_progress_without_a_terminal_logs_lines(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    clock = FakeClock(0.0)
    reporter = ProgressReporter(stream, total=None, tty=False, interval=5.0, clock=clock)
    with caplog.at_level("INFO", logger="producer.progress"):
        for second in range(1, 12):
            clock.now = float(second)
            reporter(second * 100, float(second))
        reporter.finish()
    assert stream.getvalue() == ""
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "progress: 500 points sent, 100 points/s, 5.0 s",
        "progress: 1,000 points sent, 100 points/s, 10.0 s",
    ]
