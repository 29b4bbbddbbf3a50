"""The trainer on the in-memory driver: delivery, fencing, rewind, dead letters, restart, stop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from bus.clients.base import Chunk, Driver, TopicPartition, TransientBusError
from bus.clients.memory import MemoryBroker, MemoryConsumer, MemoryDriver
from bus.deadletter import MAX_DEADLETTER_BYTES
from bus.messages import ModelVersion, Point
from bus.signing import ModelKey, verify
from bus.stream import StreamRunner
from bus.topics import Topics
from core.errors import BusError, MessageError
from core.shutdown import StopFlag
from tests.unit.test_stream import GatedDriver
from tests.unit.test_trainer_pool import Packed
from trainer.config import TrainerConfig
from trainer.pool import ParsedChunk, parse_chunk
from trainer.state import Checkpoint, StateError, assemble_checkpoint, encode_checkpoint
from trainer.step import TrainingStep
from trainer.trainer import Trainer, stream_config

TOPICS = Topics()
NAMES = {"multivariate", "polynomial"}


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic(TOPICS.points, 3)
    broker.create_topic(TOPICS.models, 1)
    broker.create_topic(TOPICS.trainer_state, 1)
    broker.create_topic(TOPICS.deadletter, 1)
    return broker


def config(**overrides: Any) -> TrainerConfig:
    base = TrainerConfig(
        group_id="g",
        transactional_id="tx",
        publish_every=200,
        publish_interval_s=0.05,
        max_records=150,
        workers=0,
        poll_timeout_ms=5,
    )
    return replace(base, **overrides)


def points(n: int, seed: int, *, unlabelled_every: int = 0) -> list[bytes]:
    """``n`` points of y = 1 + 2 x0 - 3 x1 + 0.5 x0^3 with a little noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (n, 2))
    y = 1.0 + 2.0 * x[:, 0] - 3.0 * x[:, 1] + 0.5 * x[:, 0] ** 3 + rng.normal(0, 0.01, n)
    out = []
    for i in range(n):
        label = None if unlabelled_every and i % unlabelled_every == 0 else float(y[i])
        out.append(Point(f"s{seed}-{i}", x[i].tolist(), label).to_bytes())
    return out


def produce(broker: MemoryBroker, values: list[bytes], partitions: int = 3) -> None:
    for i, value in enumerate(values):
        broker.produce(TOPICS.points, value, key=b"k%d" % i, partition=i % partitions)


def labelled(values: list[bytes]) -> int:
    return sum(1 for v in values if b'"y"' in v)


def versions(broker: MemoryBroker, topics: Topics = TOPICS) -> list[ModelVersion]:
    """The committed versions, in the order written (each must be valid)."""
    return [ModelVersion.from_bytes(r.value) for r in broker.records(topics.models)]


def latest(found: list[ModelVersion]) -> dict[str, ModelVersion]:
    return {v.name: v for v in found}


def trained_all(broker: MemoryBroker, count: int, topics: Topics = TOPICS) -> bool:
    found = latest(versions(broker, topics))
    return set(found) == NAMES and all(v.trained_on["count"] == count for v in found.values())


def checkpoint_of(broker: MemoryBroker, group: str = "g", topics: Topics = TOPICS) -> Any:
    records: dict[bytes, tuple[bytes | None, list[tuple[str, bytes]]]] = {}
    for r in broker.records(topics.trainer_state):
        assert r.key is not None
        records[r.key] = (r.value, list(r.headers))
    return assemble_checkpoint(records, group)[0]


def check_versions(found: list[ModelVersion]) -> None:
    """Each name's versions go 1, 2, 3... in the order written; counts never go back."""
    for name in NAMES:
        mine = [v for v in found if v.name == name]
        assert [v.version for v in mine] == list(range(1, len(mine) + 1)), name
        counts = [v.trained_on["count"] for v in mine]
        assert counts == sorted(counts), name


def wait_until(what: str, check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextmanager
def running(trainer: Trainer, stop: StopFlag) -> Iterator[list[BaseException]]:
    """``trainer`` in a thread; stopped on exit, its error (if any) raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            trainer.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        thread.join(timeout=20)
        assert not thread.is_alive(), "the trainer did not stop"
    if errors:
        raise errors[0]


def make(driver: Driver, cfg: TrainerConfig, topics: Topics = TOPICS, **kw: Any) -> Trainer:
    return Trainer(driver, topics, cfg, stop=kw.pop("stop"), retry_s=30.0, **kw)


def train(broker: MemoryBroker, count: int, cfg: TrainerConfig | None = None) -> Trainer:
    """Run a trainer until every model is trained on ``count`` points; stop it."""
    stop = StopFlag()
    trainer = make(broker.driver(), cfg or config(), stop=stop)
    with running(trainer, stop):
        wait_until(f"versions trained on {count} points", lambda: trained_all(broker, count))
    return trainer


def reference(values: list[bytes], cfg: TrainerConfig, partitions: int = 3) -> dict[str, Any]:
    """The final params of an uninterrupted trainer on ``values`` (a broker of its own)."""
    other = MemoryBroker()
    for topic, n in ((TOPICS.points, 3), (TOPICS.models, 1), (TOPICS.trainer_state, 1)):
        other.create_topic(topic, n)
    other.create_topic(TOPICS.deadletter, 1)
    produce(other, values, partitions)
    train(other, labelled(values), replace(cfg, publish_every=10**9, publish_interval_s=0.2))
    return {name: v.params for name, v in latest(versions(other)).items()}


def assert_same_params(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(got) == set(want) == NAMES
    for name in NAMES:
        assert got[name]["intercept"] == pytest.approx(want[name]["intercept"], abs=1e-9)
        np.testing.assert_allclose(got[name]["coef"], want[name]["coef"], rtol=0, atol=1e-9)


# --- delivery ------------------------------------------------------------------------------


def test_each_publication_is_one_transaction_of_versions_checkpoint_and_offsets(
    broker: MemoryBroker,
) -> None:
    values = points(1500, seed=1) + points(100, seed=2, unlabelled_every=1)
    produce(broker, values)
    trainer = train(broker, 1500)
    found = versions(broker)
    check_versions(found)
    assert len(found) >= 4  # several publications
    final = latest(found)
    cubic = final["polynomial"]
    assert cubic.params["intercept"] == pytest.approx(1.0, abs=0.01)
    np.testing.assert_allclose(cubic.params["coef"][:2], [2.0, -3.0], atol=0.02)
    assert trainer.versions == {name: v.version for name, v in final.items()}
    ends = {TopicPartition(TOPICS.points, p): n for p, n in enumerate([534, 533, 533])}
    assert broker.committed_offsets("g") == ends
    checkpoint = checkpoint_of(broker)
    assert checkpoint.offsets == {tp.partition: n for tp, n in ends.items()}
    assert checkpoint.count == 1500
    assert checkpoint.versions == trainer.versions
    assert {str(p): o for p, o in checkpoint.offsets.items()} == cubic.trained_on["offsets"]
    # one transaction per publication: as many commits as checkpoints, nothing else
    assert broker.calls["commit_transaction"] == len(broker.records(TOPICS.trainer_state))
    assert broker.records(TOPICS.deadletter) == []
    stats = trainer.stats
    assert (stats.records, stats.labelled, stats.unlabelled) == (1600, 1500, 100)
    assert stats.transactions == checkpoint.seq


def test_a_stop_publishes_what_is_pending(broker: MemoryBroker) -> None:
    values = points(700, seed=3)
    produce(broker, values)
    stop = StopFlag()
    trainer = make(broker.driver(), config(publish_every=10**6, publish_interval_s=3600), stop=stop)
    with running(trainer, stop):
        wait_until("every point trained", lambda: trainer.step.count == 700)
        assert trainer.stats.records == 0  # nothing was due: nothing committed yet
    final = latest(versions(broker))
    assert {v.version for v in final.values()} == {1}
    assert {v.trained_on["count"] for v in final.values()} == {700}
    assert trainer.stats.records == 700


def test_versions_are_signed_with_the_model_key(broker: MemoryBroker) -> None:
    produce(broker, points(300, seed=21))
    key = ModelKey(b"k" * 32)
    stop = StopFlag()
    trainer = make(broker.driver(), config(), stop=stop, model_key=key)
    with running(trainer, stop):
        wait_until("versions", lambda: trained_all(broker, 300))
    found = versions(broker)
    assert found and all(v.signature for v in found)
    for version in found:
        verify(version, key)
    with pytest.raises(MessageError, match="does not match"):
        verify(found[-1], ModelKey(b"x" * 32))


# --- fencing -------------------------------------------------------------------------------


def test_a_second_trainer_fences_the_first_which_stops_saying_so(broker: MemoryBroker) -> None:
    produce(broker, points(900, seed=4))
    cfg = config(publish_every=100)
    stop1, stop2 = StopFlag(), StopFlag()
    first = make(broker.driver(), cfg, stop=stop1)
    with (
        pytest.raises(BusError, match="transactional id 'tx' took over"),
        running(first, stop1) as errors,
    ):
        wait_until("the first trainer's versions", lambda: first.stats.versions > 0)
        second = make(broker.driver(), cfg, stop=stop2)
        with running(second, stop2):
            # new points make the first try a transaction, which is how it learns of the fence
            # (an idle trainer writes nothing, so nothing tells it)
            produce(broker, points(300, seed=5))
            wait_until("the first trainer to stop", lambda: bool(errors))
            wait_until("the second trainer", lambda: trained_all(broker, 1200))
    check_versions(versions(broker))


# --- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "times"),
    [("commit_transaction", 1), ("commit_transaction", 3), ("send", 2), ("poll", 2)],
)
def test_after_a_lost_transaction_it_retrains_to_what_an_uninterrupted_run_gives(
    broker: MemoryBroker, operation: str, times: int
) -> None:
    values = points(1200, seed=6, unlabelled_every=9)
    produce(broker, values)
    cfg = config(publish_every=150)
    stop = StopFlag()
    trainer = make(broker.driver(), cfg, stop=stop)
    with running(trainer, stop):
        wait_until("a first version", lambda: len(versions(broker)) >= 2)
        first = len(versions(broker))
        broker.fail_next(operation, TransientBusError(f"{operation}: coordinator aborted"), times)
        wait_until("every point trained", lambda: trained_all(broker, labelled(values)))
        rest = broker.pending_faults(operation)
    assert rest == 0
    found = versions(broker)
    check_versions(found)  # no version reused, none skipped, for read_committed readers
    assert len(found) > first
    assert trainer.runner.stats.faults >= 1 and trainer.runner.stats.rewinds >= 1
    assert trainer.stats.records == len(values)  # committed work, counted once
    assert_same_params({n: v.params for n, v in latest(found).items()}, reference(values, cfg))
    assert checkpoint_of(broker).count == labelled(values)


def test_a_fault_while_reading_back_at_start_is_retried(broker: MemoryBroker) -> None:
    values = points(300, seed=7)
    produce(broker, values)
    train(broker, 300)
    produce(broker, points(300, seed=8))
    broker.fail_next("end_offsets", TransientBusError("not the leader"), times=2)
    broker.fail_next("poll", TransientBusError("broker gone"))
    train(broker, 600)
    assert broker.pending_faults("end_offsets") == broker.pending_faults("poll") == 0
    check_versions(versions(broker))


def test_a_stop_while_a_commit_hangs_is_bounded(broker: MemoryBroker) -> None:
    produce(broker, points(300, seed=9))
    driver = GatedDriver(broker)
    stop = StopFlag()
    trainer = make(driver, config(), stop=stop)
    try:
        with running(trainer, stop):
            wait_until("a commit under way", lambda: bool(driver.commits))
            started = time.monotonic()
        assert time.monotonic() - started < 6.0  # FINISH_TIMEOUT_S and the rest
    finally:
        driver.gate.set()
    assert versions(broker) == []
    assert trainer.stats.transactions == 0


def test_a_stop_while_reading_back_at_start_is_prompt(
    broker: MemoryBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    away = threading.Event()

    def hanging(*args: Any, **kwargs: Any) -> Any:
        away.wait(30)  # a broker that does not answer
        raise TransientBusError("timed out")

    monkeypatch.setattr("trainer.step.read_start", hanging)
    stop = StopFlag()
    trainer = make(broker.driver(), config(), stop=stop)
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()
    try:
        trainer.run()
    finally:
        away.set()
        timer.cancel()
    assert time.monotonic() - started < 3.0
    assert broker.records(TOPICS.trainer_state) == []


# --- dead letters --------------------------------------------------------------------------


def test_bad_records_are_dead_lettered_one_by_one_with_their_reasons(
    broker: MemoryBroker,
) -> None:
    good = points(400, seed=10)
    bad = [
        b'{"id":"3d","x":[1.0,2.0,3.0],"y":1.0}',
        b'{"id":"smug-1","y":1.0',  # half an object, and the other half: bad on their own
        b'"x":[0.1,0.2]}',
        b'{"id":"a","x":[1,2],"y":1},{"id":"b","x":[1,2],"y":1}',
        b'{"id":"big","x":[1e13,1],"y":1}',
        None,
    ]
    for value in [*good[:200], *bad, *good[200:]]:
        broker.produce(TOPICS.points, value, key=b"k", partition=0)
    trainer = train(broker, 400)
    dead = broker.records(TOPICS.deadletter)
    assert [r.value for r in dead] == bad  # a tombstone stays one (it has a key)
    assert [r.header("source-offset") for r in dead] == [b"%d" % i for i in range(200, 206)]
    assert {r.header("source-topic") for r in dead} == {TOPICS.points.encode()}
    reasons = [(r.header("error") or b"").decode() for r in dead]
    assert "expected 2 features like the stream, got 3" in reasons[0]
    assert all("not JSON" in reason for reason in reasons[1:4])
    assert "within ±1e12" in reasons[4]
    assert "tombstone" in reasons[5]
    assert trainer.stats.deadletters == 6
    assert checkpoint_of(broker).deadletters == 6


def test_a_record_too_large_for_its_dead_letter_is_cut_to_fit(broker: MemoryBroker) -> None:
    # a bad value just under the limit: with its headers, its dead letter would not fit
    head = b'{"id":"h","x":[1,2],"y":"no","pad":"'
    huge = head + b"p" * (MAX_DEADLETTER_BYTES - 50 - len(head)) + b'"}'
    produce(broker, points(100, seed=11), partitions=1)
    broker.produce(TOPICS.points, huge, key=b"huge", partition=0)
    produce(broker, points(100, seed=12), partitions=1)
    train(broker, 200)
    (letter,) = broker.records(TOPICS.deadletter)
    assert letter.key == b"huge"
    assert letter.header("truncated") == b"true"
    assert letter.header("original-size") == str(len(huge)).encode()
    assert letter.value is not None and huge.startswith(letter.value)
    size = len(letter.value) + sum(len(k) + len(v) for k, v in letter.headers)
    assert size < MAX_DEADLETTER_BYTES


def test_a_chunk_the_parser_fails_on_is_parsed_value_by_value(
    broker: MemoryBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fragile(chunk: Chunk, *args: Any) -> ParsedChunk:
        if any(b"boom" in (v or b"") for v in chunk.columns()[2]):
            raise RuntimeError("boom")
        return parse_chunk(chunk, *args)

    monkeypatch.setattr("trainer.pool.parse_chunk", fragile)
    values = points(300, seed=20)
    values[120] = b'{"id":"boom","x":[1,2],"y":1}'
    produce(broker, values)
    trainer = train(broker, 299)
    (letter,) = broker.records(TOPICS.deadletter)
    assert letter.value == values[120]
    assert letter.header("error") == b"RuntimeError: boom"
    assert trainer.stats.records == 300
    checkpoint = checkpoint_of(broker)
    assert broker.committed_offsets("g") == {
        TopicPartition(TOPICS.points, p): o for p, o in checkpoint.offsets.items()
    }


# --- restart -------------------------------------------------------------------------------


@pytest.mark.parametrize(("window", "partitions"), [(0, 3), (250, 1)])
def test_a_restart_resumes_exactly_from_the_checkpoint(
    broker: MemoryBroker, window: int, partitions: int
) -> None:
    first, second = points(900, seed=13), points(600, seed=14, unlabelled_every=7)
    cfg = config(window=window, publish_every=170)
    produce(broker, first, partitions)
    train(broker, 900, cfg)
    before = versions(broker)
    produce(broker, second, partitions)
    train(broker, labelled(first + second), cfg)
    found = versions(broker)
    assert found[: len(before)] == before
    check_versions(found)
    assert_same_params(
        {n: v.params for n, v in latest(found).items()}, reference(first + second, cfg, partitions)
    )


def test_a_checkpoint_in_parts_stays_in_one_partition_and_is_read_back() -> None:
    broker = MemoryBroker()
    broker.create_topic(TOPICS.points, 1)
    broker.create_topic(TOPICS.models, 1)
    broker.create_topic(TOPICS.trainer_state, 3)
    broker.create_topic(TOPICS.deadletter, 1)
    first, second = points(20_000, seed=22), points(500, seed=23)
    cfg = config(window=20_000, publish_every=10**6, publish_interval_s=0.5, max_records=5000)
    produce(broker, first, partitions=1)
    train(broker, 20_000, cfg)
    state = broker.records(TOPICS.trainer_state)
    assert max(int(r.header("checkpoint-parts") or b"0") for r in state) >= 2  # cut in parts
    assert len({r.partition for r in state}) == 1
    produce(broker, second, partitions=1)
    train(broker, 20_500, cfg)
    assert checkpoint_of(broker).count == 20_500
    assert len({r.partition for r in broker.records(TOPICS.trainer_state)}) == 1
    check_versions(versions(broker))


def test_versions_on_models_are_never_reused_without_a_checkpoint(broker: MemoryBroker) -> None:
    produce(broker, points(300, seed=15))
    for name in NAMES:
        model = ModelVersion(name, 41, "multivariate", 2, {}, {"count": 0}, {}, 0)
        broker.produce(TOPICS.models, model.to_bytes(), key=name.encode())
        beyond = model.to_bytes().replace(b'"version":41', b'"version":%d' % 2**60)
        broker.produce(TOPICS.models, beyond, key=name.encode())  # no reader takes it
    before = len(broker.records(TOPICS.models))
    stop = StopFlag()
    trainer = make(broker.driver(), config(), stop=stop)

    def mine() -> list[ModelVersion]:
        return [ModelVersion.from_bytes(r.value) for r in broker.records(TOPICS.models)[before:]]

    with running(trainer, stop):
        wait_until("versions", lambda: {v.name for v in mine()} == NAMES)
    assert min(v.version for v in mine()) == 42


def test_a_checkpoint_of_another_topic_or_ahead_of_the_topic_is_refused(
    broker: MemoryBroker,
) -> None:
    produce(broker, points(300, seed=16))
    train(broker, 300)
    broker.create_topic("points-again", 3)
    topics = replace(TOPICS, points="points-again")
    with pytest.raises(StateError, match="was taken on topic 'points'"):
        make(broker.driver(), config(), topics, stop=StopFlag()).run()
    ahead = Checkpoint("g", TOPICS.points, seq=99, offsets={0: 100, 1: 5000, 2: 100})
    for key, value, headers in encode_checkpoint(ahead):
        broker.produce(TOPICS.trainer_state, value, key=key, headers=headers)
    with pytest.raises(StateError, match=r"points\[1\] up to offset 5000, but the partition ends"):
        make(broker.driver(), config(), stop=StopFlag()).run()


def test_new_partitions_are_read_from_their_beginning(broker: MemoryBroker) -> None:
    produce(broker, points(300, seed=17))
    cfg = config()
    stop = StopFlag()
    driver = broker.driver()
    step = TrainingStep(driver, TOPICS, cfg, stop=stop)
    runner = StreamRunner(
        driver, replace(stream_config(TOPICS, cfg), partition_check_s=0.05), step, stop=stop
    )
    trainer = Trainer(driver, TOPICS, cfg, stop=stop, step=step, runner=runner)
    with running(trainer, stop):
        wait_until("the first points", lambda: trained_all(broker, 300))
        broker.create_topic(TOPICS.points, 4)
        for i, value in enumerate(points(50, seed=18)):
            broker.produce(TOPICS.points, value, partition=3 if i % 2 else 0)
        wait_until("the new partition's points", lambda: trained_all(broker, 350))
    assert checkpoint_of(broker).offsets[3] == 25


# --- parsing workers -----------------------------------------------------------------------


class PackingConsumer(MemoryConsumer):
    """Hands out chunks still encoded, as the kafka-python driver does."""

    def poll_chunks(self, timeout_s: float, max_records: int | None = None) -> list[Chunk]:
        return [
            Chunk(c.topic, c.partition, c.next_offset, Packed(*c.columns()))
            for c in super().poll_chunks(timeout_s, max_records)
        ]


class PackingDriver(MemoryDriver):
    def consumer(self, **options: Any) -> MemoryConsumer:
        return PackingConsumer(self.broker, options)


def test_parsing_workers_train_what_the_loop_alone_trains(
    broker: MemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    values = points(1000, seed=19, unlabelled_every=5)
    values[500] = b"garbage"
    produce(broker, values)
    stop = StopFlag()
    trainer = make(PackingDriver(broker), config(workers=1, publish_every=10**9), stop=stop)
    with running(trainer, stop):
        wait_until("every point", lambda: trained_all(broker, labelled(values)))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "pars" in r.message]
    assert trainer.stats.deadletters == 1
    assert_same_params(
        {n: v.params for n, v in latest(versions(broker)).items()},
        reference(values, config(workers=0)),
    )
