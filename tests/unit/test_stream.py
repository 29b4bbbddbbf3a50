"""The stream kernel on the in-memory driver: delivery modes, record errors, faults, stop."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from bus.clients.base import (
    Chunk,
    Driver,
    Headers,
    Producer,
    Record,
    TopicPartition,
    TransientBusError,
)
from bus.clients.memory import MemoryBroker
from bus.stream import (
    ChunkStep,
    Outcome,
    Step,
    StreamConfig,
    StreamRunner,
    StreamStats,
    retry_s_from_env,
)
from core.errors import BusError, ConfigError
from core.shutdown import StopFlag

IN, OUT, DLQ, GROUP, TXID = "in", "out", "deadletter", "group", "tx-1"
DELIVERIES = ["at-least-once", "exactly-once"]


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic(OUT, 3)
    broker.create_topic(DLQ, 1)
    return broker


def seed(broker: MemoryBroker, count: int, partitions: int = 3) -> list[bytes]:
    """Write ``count`` records ``v0``, ``v1``... spread over ``partitions``; return the values."""
    broker.create_topic(IN, partitions)
    values = [f"v{i}".encode() for i in range(count)]
    for i, value in enumerate(values):
        broker.produce(IN, value, key=b"k%d" % i, partition=i % partitions)
    return values


def ends(broker: MemoryBroker) -> dict[TopicPartition, int]:
    """The next offset of every partition of the input topic that has records."""
    out: dict[TopicPartition, int] = {}
    for record in broker.records(IN, committed_only=False):
        out[record.tp] = max(out.get(record.tp, 0), record.offset + 1)
    return out


def outputs(broker: MemoryBroker) -> list[bytes | None]:
    """The committed values on the output topic."""
    return [r.value for r in broker.records(OUT)]


@dataclass
class Copy(Step):
    """Copies each value to OUT, keyed as it came; a value ``poison`` raises.

    Stops the loop the first time a poll finds nothing. ``commit_every`` N: only
    every N-th batch asks for a commit. ``before`` runs at each process call.
    """

    stop: StopFlag
    commit_every: int = 1
    before: Callable[[int], None] | None = None
    output: Callable[[Record], bytes] = lambda r: r.value or b""
    calls: int = 0
    done: list[Outcome] = field(default_factory=list)
    rewinds: int = 0
    revoked_seen: list[list[TopicPartition]] = field(default_factory=list)
    last: Outcome | None = None

    def process(self, records: list[Record]) -> Outcome:
        self.calls += 1
        if self.before is not None:
            self.before(self.calls)
        for record in records:
            if record.value == b"poison":
                raise ValueError(f"poison at offset {record.offset}")
        outcome = Outcome(commit=self.calls % self.commit_every == 0)
        return outcome.add(OUT, [self.output(r) for r in records], [r.key for r in records])

    def committed(self, outcome: Outcome) -> None:
        self.done.append(outcome)

    def rewind(self) -> None:
        self.rewinds += 1

    def idle(self) -> Outcome | None:
        self.stop.set()
        return None

    def revoked(self, partitions: list[TopicPartition]) -> None:
        self.revoked_seen.append(partitions)

    def finish(self) -> Outcome | None:
        return self.last


def runner(
    broker: MemoryBroker,
    step: Step | ChunkStep,
    stop: StopFlag,
    delivery: str = "at-least-once",
    *,
    clock: Callable[[], float] | None = None,
    **overrides: Any,
) -> StreamRunner:
    settings: dict[str, Any] = {
        "topics": (IN,),
        "group_id": GROUP,
        "service": "test",
        "delivery": delivery,
        "transactional_id": TXID if delivery == "exactly-once" else None,
        "deadletter_topic": DLQ,
        "poll_timeout_s": 0.0,
        "backoff_s": 0.001,
        "backoff_max_s": 0.004,
        **overrides,
    }
    config = StreamConfig(**settings)
    if clock is None:
        return StreamRunner(broker.driver(), config, step, stop=stop)
    return StreamRunner(broker.driver(), config, step, stop=stop, clock=clock)


def run_copy(broker: MemoryBroker, delivery: str, **overrides: Any) -> tuple[Copy, StreamStats]:
    stop = StopFlag()
    step = Copy(stop)
    stats = runner(broker, step, stop, delivery, **overrides).run()
    return step, stats


# --- both delivery modes ---------------------------------------------------------------


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_outputs_written_and_offsets_committed(broker: MemoryBroker, delivery: str) -> None:
    values = seed(broker, 100)
    step, stats = run_copy(broker, delivery, max_batch=30)
    assert Counter(outputs(broker)) == Counter(values)
    assert broker.committed_offsets(GROUP) == ends(broker)
    assert stats.records == stats.outputs == 100
    assert stats.batches >= 4
    assert stats.commits == stats.batches
    assert (stats.faults, stats.deadletters, stats.rewinds) == (0, 0, 0)
    assert stats.last_progress > 0
    assert len(step.done) == stats.batches
    keyed = {r.value: r.key for r in broker.records(OUT)}
    assert keyed[b"v7"] == b"k7"


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_a_poison_record_is_dead_lettered_and_the_rest_pass(
    broker: MemoryBroker, delivery: str
) -> None:
    values = seed(broker, 20, partitions=2)
    poison = broker.produce(IN, b"poison", key=b"bad-key", partition=1)
    values += [broker.produce(IN, b"after", partition=1).value or b""]
    _, stats = run_copy(broker, delivery)

    assert Counter(outputs(broker)) == Counter(values)
    (letter,) = broker.records(DLQ)
    assert (letter.key, letter.value) == (b"bad-key", b"poison")
    assert letter.header("error") == f"ValueError: poison at offset {poison.offset}".encode()
    assert letter.header("source-topic") == IN.encode()
    assert letter.header("source-partition") == b"1"
    assert letter.header("source-offset") == str(poison.offset).encode()
    assert letter.header("service") == b"test"
    assert broker.committed_offsets(GROUP) == ends(broker)
    assert (stats.deadletters, stats.outputs) == (1, len(values))


def test_a_batch_of_poison_only_is_committed_with_its_dead_letters(
    broker: MemoryBroker,
) -> None:
    broker.create_topic(IN, 1)
    for _ in range(3):
        broker.produce(IN, b"poison")
    _, stats = run_copy(broker, "exactly-once")
    assert len(broker.records(DLQ)) == 3
    assert broker.committed_offsets(GROUP) == {TopicPartition(IN, 0): 3}
    assert stats.deadletters == 3


def test_an_output_over_the_size_limit_dead_letters_its_record(broker: MemoryBroker) -> None:
    values = seed(broker, 10, partitions=1)
    stop = StopFlag()
    step = Copy(stop, output=lambda r: b"x" * 5000 if r.value == b"v3" else r.value or b"")
    runner(broker, step, stop, max_record_bytes=1000).run()
    assert Counter(outputs(broker)) == Counter(v for v in values if v != b"v3")
    (letter,) = broker.records(DLQ)
    assert letter.value == b"v3"
    error = (letter.header("error") or b"").decode()
    assert error.startswith("RecordTooLargeError: an output to 'out' of 5000 bytes")


# --- transient faults ------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["flush", "commit", "poll", "send"])
def test_at_least_once_retries_a_transient_fault_and_loses_nothing(
    broker: MemoryBroker, operation: str, caplog: pytest.LogCaptureFixture
) -> None:
    values = seed(broker, 60)
    broker.fail_next(operation, TransientBusError(f"{operation}: broker restarting"))
    with caplog.at_level(logging.INFO, logger="bus.stream"):
        step, stats = run_copy(broker, "at-least-once", max_batch=25)
    assert broker.pending_faults(operation) == 0
    got = outputs(broker)
    assert set(got) == set(values)  # none lost; the redone batch may repeat
    assert broker.committed_offsets(GROUP) == ends(broker)
    assert stats.faults == 1
    assert step.rewinds == stats.rewinds == 1
    assert stats.records == 60  # committed work, counted once
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{operation} failed" in w and "broker restarting" in w for w in warnings)
    assert any("recovered after" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "operation",
    ["commit_transaction", "send_offsets_to_transaction", "begin_transaction", "poll", "send"],
)
def test_exactly_once_aborts_on_a_transient_fault_and_outputs_each_record_once(
    broker: MemoryBroker, operation: str
) -> None:
    values = seed(broker, 60)
    broker.fail_next(operation, TransientBusError("coordinator moved"))
    step, stats = run_copy(broker, "exactly-once", max_batch=25)
    assert broker.pending_faults(operation) == 0
    assert Counter(outputs(broker)) == Counter(values)  # exactly one committed output each
    assert broker.committed_offsets(GROUP) == ends(broker)
    assert stats.faults == 1
    assert step.rewinds == 1
    opened = operation in ("commit_transaction", "send_offsets_to_transaction", "send")
    assert stats.aborts == (1 if opened else 0)


def test_aborted_outputs_stay_invisible_and_rewind_follows_the_abort(
    broker: MemoryBroker,
) -> None:
    values = seed(broker, 10, partitions=1)
    broker.fail_next("commit_transaction", TransientBusError("coordinator moved"))
    step, stats = run_copy(broker, "exactly-once")
    written = [r.value for r in broker.records(OUT, committed_only=False)]
    assert Counter(written) == Counter(values * 2)  # the aborted copy is in the log...
    assert Counter(outputs(broker)) == Counter(values)  # ...and never visible
    assert (stats.aborts, step.rewinds) == (1, 1)


def test_a_producer_that_cannot_abort_is_replaced(broker: MemoryBroker) -> None:
    values = seed(broker, 10, partitions=1)
    broker.fail_next("commit_transaction", TransientBusError("request timed out"))
    broker.fail_next("abort_transaction", TransientBusError("producer in a fatal state"))
    run_copy(broker, "exactly-once")
    assert broker.calls["init_transactions"] == 2
    assert Counter(outputs(broker)) == Counter(values)
    assert broker.committed_offsets(GROUP) == ends(broker)


def test_a_fault_while_starting_is_retried(broker: MemoryBroker) -> None:
    values = seed(broker, 10)
    broker.fail_next("init_transactions", TransientBusError("no coordinator yet"))
    _, stats = run_copy(broker, "exactly-once")
    assert Counter(outputs(broker)) == Counter(values)
    assert stats.faults == 1


class FakeClock:
    """Seconds that advance by ``step`` at every reading."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_the_retry_budget_spent_without_progress_is_a_bus_error(broker: MemoryBroker) -> None:
    seed(broker, 10)
    broker.fail_next("poll", TransientBusError("connection refused"), times=1000)
    stop = StopFlag()
    step = Copy(stop)
    with pytest.raises(BusError, match="KAFKA_BOOTSTRAP_SERVERS") as caught:
        runner(broker, step, stop, clock=FakeClock(10.0), retry_s=100.0).run()
    assert "poll failed: connection refused" in str(caught.value)
    assert 5 <= 1000 - broker.pending_faults("poll") <= 12
    assert broker.calls["consumer.close"] == 1  # clients closed on the way out


def test_fenced_stops_with_the_transactional_id(broker: MemoryBroker) -> None:
    seed(broker, 10)
    stop = StopFlag()
    step = Copy(stop, before=lambda call: broker.fence(TXID))
    with pytest.raises(BusError, match=f"transactional id '{TXID}' took over"):
        runner(broker, step, stop, "exactly-once").run()
    assert outputs(broker) == []
    assert broker.committed_offsets(GROUP) == {}


# --- commits, stop, idle ---------------------------------------------------------------


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_uncommitted_outcomes_accumulate_until_one_commits(
    broker: MemoryBroker, delivery: str
) -> None:
    seed(broker, 30, partitions=1)
    seen: list[tuple[dict[TopicPartition, int], int]] = []

    def snapshot(_: int) -> None:
        seen.append((broker.committed_offsets(GROUP), len(outputs(broker))))

    stop = StopFlag()
    step = Copy(stop, commit_every=3, before=snapshot)
    stats = runner(broker, step, stop, delivery, max_batch=5).run()
    tp = TopicPartition(IN, 0)
    assert [offsets.get(tp) for offsets, _ in seen] == [None, None, None, 15, 15, 15]
    assert broker.committed_offsets(GROUP) == {tp: 30}
    if delivery == "exactly-once":  # outputs become visible with their commit only
        assert [count for _, count in seen] == [0, 0, 0, 15, 15, 15]
    assert stats.commits == 2
    assert len(step.done) == 6  # each outcome reported once it was committed


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_stop_commits_the_work_in_hand_and_what_finish_writes(
    broker: MemoryBroker, delivery: str
) -> None:
    values = seed(broker, 12)
    stop = StopFlag()
    step = Copy(stop, commit_every=1000)  # never asks for a commit itself
    step.last = Outcome().add(OUT, [b"bye"])
    stats = runner(broker, step, stop, delivery).run()
    assert Counter(outputs(broker)) == Counter([*values, b"bye"])
    assert broker.committed_offsets(GROUP) == ends(broker)
    assert stats.commits == 1
    assert broker.calls["consumer.close"] == broker.calls["producer.close"] == 1


def test_a_fault_at_stop_leaves_the_work_uncommitted(broker: MemoryBroker) -> None:
    seed(broker, 6, partitions=1)
    stop = StopFlag()
    step = Copy(stop, commit_every=1000)
    broker.fail_next("commit_transaction", TransientBusError("coordinator moved"))
    stats = runner(broker, step, stop, "exactly-once").run()
    assert outputs(broker) == []
    assert broker.committed_offsets(GROUP) == {}
    assert stats.aborts == 1


@dataclass
class Ticking(Step):
    """Holds the input for ``hold`` ticks, writes one output when idle, then stops."""

    broker: MemoryBroker
    stop: StopFlag
    hold: int = 3
    polls_while_holding: list[int] = field(default_factory=list)
    idles: int = 0

    def process(self, records: list[Record]) -> Outcome:
        return Outcome().add(OUT, [r.value for r in records])

    def tick(self) -> bool:
        if self.hold > 0:
            self.hold -= 1
            self.polls_while_holding.append(self.broker.calls.get("poll", 0))
            return False
        return True

    def idle(self) -> Outcome | None:
        self.idles += 1
        if self.idles == 1:
            return Outcome().add(OUT, [b"score"])
        self.stop.set()
        return None


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_tick_holds_the_input_and_idle_outcomes_are_written(
    broker: MemoryBroker, delivery: str
) -> None:
    values = seed(broker, 5)
    stop = StopFlag()
    step = Ticking(broker, stop)
    runner(broker, step, stop, delivery).run()
    assert step.polls_while_holding == [0, 0, 0]
    assert Counter(outputs(broker)) == Counter([*values, b"score"])


# --- chunks, assignment, rebalances ----------------------------------------------------


@dataclass
class CopyChunks(ChunkStep):
    """Copies chunk values to OUT; a chunk holding ``poison`` raises."""

    stop: StopFlag

    def process_chunks(self, chunks: list[Chunk]) -> Outcome:
        outcome = Outcome()
        for chunk in chunks:
            _, keys, values = chunk.columns()
            if b"poison" in values:
                raise ValueError("poison in the chunk")
            outcome.add(OUT, values, keys)
        return outcome

    def idle(self) -> Outcome | None:
        self.stop.set()
        return None


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_a_chunk_step_gets_columns_and_its_poison_is_dead_lettered(
    broker: MemoryBroker, delivery: str
) -> None:
    values = seed(broker, 20, partitions=2)
    poison = broker.produce(IN, b"poison", key=b"pk", partition=0)
    stop = StopFlag()
    stats = runner(broker, CopyChunks(stop), stop, delivery).run()
    assert Counter(outputs(broker)) == Counter(values)
    (letter,) = broker.records(DLQ)
    assert (letter.key, letter.value) == (b"pk", b"poison")
    assert letter.header("source-offset") == str(poison.offset).encode()
    assert letter.header("error") == b"ValueError: poison in the chunk"
    assert broker.committed_offsets(GROUP) == ends(broker)
    assert stats.chunks >= 2


@dataclass
class Placed(Copy):
    """A Copy that says where to start each partition (assign mode)."""

    places: Mapping[TopicPartition, int | None] = field(default_factory=dict)
    started: list[list[TopicPartition]] = field(default_factory=list)

    def start(self, partitions: list[TopicPartition]) -> Mapping[TopicPartition, int | None]:
        self.started.append(partitions)
        return {tp: o for tp, o in self.places.items() if tp in partitions}


def test_assign_mode_starts_where_the_step_says_and_reads_new_partitions(
    broker: MemoryBroker,
) -> None:
    seed(broker, 20, partitions=2)  # v0, v2... on [0]; v1, v3... on [1]
    tp0, tp1, tp2 = (TopicPartition(IN, p) for p in range(3))

    def grow(call: int) -> None:
        if call == 1:
            broker.create_topic(IN, 3)
            broker.produce(IN, b"new", partition=2)

    stop = StopFlag()
    # nothing is committed before the new partition shows: partitions 0 and 1 must go on
    # from where they were read to, not from the group's (empty) committed offsets
    step = Placed(stop, commit_every=1000, before=grow, places={tp0: 5, tp1: None})
    runner(broker, step, stop, "exactly-once", mode="assign", partition_check_s=0.0).run()
    assert step.started == [[tp0, tp1], [tp2]]
    expected = [f"v{i}".encode() for i in range(20) if i % 2 or i >= 10] + [b"new"]
    assert Counter(outputs(broker)) == Counter(expected)
    assert broker.committed_offsets(GROUP) == {tp0: 10, tp1: 10, tp2: 1}


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_a_revoke_settles_the_uncommitted_work(broker: MemoryBroker, delivery: str) -> None:
    seed(broker, 20, partitions=2)
    tp0, tp1 = TopicPartition(IN, 0), TopicPartition(IN, 1)

    def join(call: int) -> None:
        if call == 1:  # a second member joins: the group rebalances at the next poll
            broker.driver().consumer(group_id=GROUP).subscribe([IN])

    stop = StopFlag()
    step = Copy(stop, commit_every=1000, before=join)
    stats = runner(broker, step, stop, delivery).run()
    assert step.revoked_seen == [[tp0, tp1]]
    mine = [f"v{i}".encode() for i in range(0, 20, 2)]  # partition 0 stays with this member
    if delivery == "at-least-once":
        # the work of the revoked partitions was flushed and committed at once
        assert broker.committed_offsets(GROUP) == {tp0: 10, tp1: 10}
        assert Counter(outputs(broker)) == Counter(f"v{i}".encode() for i in range(20))
    else:
        # the open transaction was aborted; this member redid its own partition only
        assert broker.committed_offsets(GROUP) == {tp0: 10}
        assert Counter(outputs(broker)) == Counter(mine)
        assert (stats.aborts, step.rewinds) == (1, 1)


# --- background commits ----------------------------------------------------------------


class GatedProducer(Producer):
    """A producer whose ``gated`` calls wait until the test opens the gate."""

    def __init__(
        self, inner: Producer, gate: threading.Event, started: list[float], gated: set[str]
    ) -> None:
        self._inner = inner
        self._gate = gate
        self._started = started
        self._gated = gated

    def _wait(self, operation: str) -> None:
        if operation in self._gated:
            assert self._gate.wait(30), "the test never opened the gate"

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        self._inner.send(topic, value, key=key, partition=partition, headers=headers)

    def flush(self, timeout_s: float = 30.0) -> None:
        self._inner.flush(timeout_s)

    def partition_count(self, topic: str) -> int:
        return self._inner.partition_count(topic)

    def init_transactions(self) -> None:
        self._wait("init_transactions")
        self._inner.init_transactions()

    def begin_transaction(self) -> None:
        self._inner.begin_transaction()

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group: object
    ) -> None:
        self._inner.send_offsets_to_transaction(offsets, group)

    def commit_transaction(self) -> None:
        self._started.append(time.monotonic())
        self._wait("commit_transaction")
        self._inner.commit_transaction()

    def abort_transaction(self) -> None:
        self._wait("abort_transaction")
        self._inner.abort_transaction()

    def close(self, timeout_s: float = 10.0) -> None:
        self._inner.close(timeout_s)


class GatedDriver(Driver):
    """The memory driver, with producer calls (commits by default) that wait for ``gate``."""

    name = "gated"

    def __init__(self, broker: MemoryBroker, gated: frozenset[str] = frozenset()) -> None:
        self._inner = broker.driver()
        self.gate = threading.Event()
        self.commits: list[float] = []
        self.gated = set(gated or {"commit_transaction"})

    def producer(self, **options: Any) -> Producer:
        inner = self._inner.producer(**options)
        return GatedProducer(inner, self.gate, self.commits, self.gated)

    def consumer(self, **options: Any) -> Any:
        return self._inner.consumer(**options)


def background_runner(driver: Driver, step: Step, stop: StopFlag, **overrides: Any) -> StreamRunner:
    config = StreamConfig(
        topics=(IN,),
        group_id=GROUP,
        service="test",
        delivery="exactly-once",
        transactional_id=TXID,
        deadletter_topic=DLQ,
        poll_timeout_s=0.0,
        backoff_s=0.001,
        backoff_max_s=0.004,
        background_commit=True,
        **overrides,
    )
    return StreamRunner(driver, config, step, stop=stop)


def test_background_commits_let_the_step_go_on_and_hold_its_outputs(
    broker: MemoryBroker,
) -> None:
    values = seed(broker, 60, partitions=1)
    driver = GatedDriver(broker)
    seen: dict[int, tuple[int, dict[TopicPartition, int], int]] = {}

    def watch(call: int) -> None:
        written = len(broker.records(OUT, committed_only=False))
        seen[call] = (written, broker.committed_offsets(GROUP), len(driver.commits))
        if call == 4:
            driver.gate.set()

    stop = StopFlag()
    step = Copy(stop, before=watch)
    stats = background_runner(driver, step, stop, max_batch=10).run()
    # the first batch's commit waits; batches 2 to 4 are processed meanwhile, unsent
    assert [seen[call] for call in (2, 3, 4)] == [(10, {}, 1)] * 3
    assert Counter(outputs(broker)) == Counter(values)  # then each is committed once
    assert broker.committed_offsets(GROUP) == {TopicPartition(IN, 0): 60}
    assert stats.records == stats.outputs == 60
    assert 2 <= stats.commits < stats.batches == 6  # the held batches share commits
    assert [o.outputs[0].values[0] for o in step.done] == [
        f"v{i}".encode() for i in range(0, 60, 10)
    ]


def test_a_failed_background_commit_redoes_everything_since_the_last_one(
    broker: MemoryBroker,
) -> None:
    values = seed(broker, 60)
    broker.fail_next("commit_transaction", TransientBusError("coordinator moved"))
    stop = StopFlag()
    step = Copy(stop)
    stats = background_runner(broker.driver(), step, stop, max_batch=25).run()
    assert broker.pending_faults("commit_transaction") == 0
    assert Counter(outputs(broker)) == Counter(values)
    assert broker.committed_offsets(GROUP) == ends(broker)
    assert (stats.faults, stats.aborts, step.rewinds) == (1, 1, 1)
    assert stats.records == 60


def test_a_fenced_background_commit_stops_the_runner(broker: MemoryBroker) -> None:
    seed(broker, 10)
    stop = StopFlag()
    step = Copy(stop, before=lambda call: broker.fence(TXID) if call == 1 else None)
    with pytest.raises(BusError, match=f"transactional id '{TXID}' took over"):
        background_runner(broker.driver(), step, stop).run()
    assert outputs(broker) == []


def test_a_stop_waits_for_a_stuck_commit_a_bounded_time(
    broker: MemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    seed(broker, 10, partitions=1)
    driver = GatedDriver(broker)
    stop = StopFlag()
    step = Copy(stop)
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="bus.stream"):
            stats = background_runner(driver, step, stop, finish_timeout_s=0.3).run()
    finally:
        driver.gate.set()
    assert time.monotonic() - started < 3.0
    assert len(driver.commits) == 1
    assert stats.commits == 0 and step.done == []
    assert any("still in flight" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("operation", ["init_transactions", "abort_transaction"])
def test_a_stop_during_a_call_that_hangs_is_prompt(broker: MemoryBroker, operation: str) -> None:
    seed(broker, 10, partitions=1)
    broker.fail_next("commit_transaction", TransientBusError("broker gone"))  # then an abort
    driver = GatedDriver(broker, frozenset({operation}))
    stop = StopFlag()
    runner = background_runner(driver, Copy(stop), stop, finish_timeout_s=0.3)
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()
    try:
        stats = runner.run()
    finally:
        timer.cancel()
        driver.gate.set()
    assert time.monotonic() - started < 3.0
    assert outputs(broker) == []
    assert stats.commits == 0


# --- configuration ---------------------------------------------------------------------


def test_config_refuses_what_cannot_work() -> None:
    base: dict[str, Any] = {"topics": (IN,), "group_id": GROUP, "service": "svc"}
    with pytest.raises(ConfigError, match="transactional id"):
        StreamConfig(**base, delivery="exactly-once")
    with pytest.raises(ConfigError, match="delivery 'twice'"):
        StreamConfig(**base, delivery="twice")
    with pytest.raises(ConfigError, match="mode"):
        StreamConfig(**base, mode="steal")
    with pytest.raises(ConfigError, match="no input topic"):
        StreamConfig(**{**base, "topics": ()})
    with pytest.raises(ConfigError, match="background commits are for exactly-once"):
        StreamConfig(**base, background_commit=True)
    assert StreamConfig(**base).retry_s == 300.0


def test_retry_budget_from_the_environment() -> None:
    assert retry_s_from_env({}) == 300.0
    assert retry_s_from_env({"STREAMSCORE_BUS_RETRY_S": "12.5"}) == 12.5
    with pytest.raises(ConfigError, match="STREAMSCORE_BUS_RETRY_S"):
        retry_s_from_env({"STREAMSCORE_BUS_RETRY_S": "soon"})
