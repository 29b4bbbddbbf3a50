"""The scenarios: each injects one kind of fault into a live run and judges what came out.

A scenario is a function of a `Context` (the client under test, the load, the
brokers) that returns the `RunResult` of one run. They share the figures of
`chaos.counts.judge`: nothing lost, no duplicates in exactly-once mode, no
service exited, a new prediction after every fault. Some add checks of their own.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kafka.errors import KafkaError

from bus.clients import make_producer
from chaos.cluster import ChaosBrokers
from chaos.counts import DeadLetter, Observed, RunResult, digest, first_after_s, recovery_s
from chaos.harness import LiveRun, Load
from chaos.poison import PREDICTED, Poison, model_poisons, point_poisons, request_poisons
from core.errors import StreamscoreError

log = logging.getLogger(__name__)

KILLS = 5
#: Writes of a killed process may still be appended this long after the kill.
IN_FLIGHT_S = 0.5
#: How long a restarted scorer gets to join its group before the next kill.
REJOIN_S = 5.0
#: The clean broker restart: down, then up this much later.
RESTART_DELAY_S = 3.0
#: The model name the trainer publishes by default (the poison models take it over).
MODEL = "multivariate"


class BrokerPool:
    """The suite's brokers: one node or three, started when a scenario needs them."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._current: ChaosBrokers | None = None

    def get(self, brokers: int) -> ChaosBrokers:
        """Brokers of that size, every node up (the other size is stopped first)."""
        if self._current is not None and self._current.brokers != brokers:
            self._current.stop()
            self._current = None
        if self._current is None:
            self._current = ChaosBrokers(self._workdir / f"kafka-{brokers}", brokers)
        self._current.up()
        return self._current

    def stop(self) -> None:
        """Stop whatever runs."""
        if self._current is not None:
            self._current.stop()
            self._current = None


@dataclass
class Context:
    """What every scenario gets: the client under test, the load, the brokers, a log folder."""

    client: str
    load: Load
    pool: BrokerPool
    log_dir: Path

    def live(
        self,
        scenario: str,
        brokers: ChaosBrokers,
        *,
        delivery: str = "at-least-once",
        scorers: tuple[str, ...] = ("scorer",),
    ) -> LiveRun:
        """A live run of ``scenario`` on ``brokers``."""
        return LiveRun(
            scenario,
            self.client,
            brokers,
            self.log_dir / scenario,
            self.load,
            delivery=delivery,
            scorers=scorers,
        )


# --- broker faults -----------------------------------------------------------------------


def broker_kill(ctx: Context) -> RunResult:
    """The only broker is killed (SIGKILL) mid-stream and started again at once."""
    brokers = ctx.pool.get(1)
    with ctx.live("broker-kill", brokers) as run:
        if not run.warm_up():
            return run.finish(faults=0)
        brokers.kill(1)
        brokers.up()
        end = run.fault_over()
        run.wait_recovered(end)
        return run.finish()


def broker_restart(ctx: Context) -> RunResult:
    """The only broker is stopped cleanly (`kafka down`) and started 3 s later."""
    brokers = ctx.pool.get(1)
    with ctx.live("broker-restart", brokers) as run:
        if not run.warm_up():
            return run.finish(faults=0)
        brokers.down()
        run.hold(RESTART_DELAY_S)
        brokers.up()
        end = run.fault_over()
        run.wait_recovered(end)
        return run.finish()


def _leader_kill(ctx: Context, scenario: str, delivery: str) -> RunResult:
    brokers = ctx.pool.get(3)
    try:
        with ctx.live(scenario, brokers, delivery=delivery) as run:
            if not run.warm_up():
                return run.finish(faults=0)
            leader = brokers.leader_of(run.topics.points, 0)
            killed_at = brokers.kill(leader)
            run.result.notes.append(f"killed node {leader}, leader of {run.topics.points}[0]")
            end = run.fault_over(killed_at)
            run.wait_recovered(end)
            return run.finish()
    finally:
        brokers.up()  # the next scenario gets all three nodes


def leader_kill(ctx: Context) -> RunResult:
    """Three brokers; the leader of a points partition is killed; the scorer at-least-once."""
    return _leader_kill(ctx, "leader-kill", "at-least-once")


def leader_kill_exactly_once(ctx: Context) -> RunResult:
    """Three brokers; the leader of a points partition is killed; the scorer exactly-once."""
    return _leader_kill(ctx, "leader-kill-eos", "exactly-once")


# --- service faults ----------------------------------------------------------------------


def scorer_kill(ctx: Context) -> RunResult:
    """Two scorers share the group; one is killed five times (alternately), restarted each time.

    The time to recover is the takeover: from the kill until every partition has
    a new prediction (the group notices a killed member only after its session
    times out).
    """
    brokers = ctx.pool.get(1)
    names = ("scorer-a", "scorer-b")
    with ctx.live("scorer-kill", brokers, scorers=names) as run:
        if not run.warm_up():
            return run.finish(faults=0)
        kills: list[int] = []
        for i in range(KILLS):
            victim = names[i % 2]
            killed_at = run.services.kill(victim)
            kills.append(run.fault_over(killed_at))
            run.wait_recovered(kills[-1], grace_s=IN_FLIGHT_S)
            run.start_scorer(victim)
            run.hold(REJOIN_S)
        return run.finish(recoveries=lambda seen: takeovers(seen, kills), faults=KILLS)


def takeovers(observed: Observed, kills: list[int]) -> list[float | None]:
    """Seconds from each kill until every partition was predicted again.

    What was appended within `IN_FLIGHT_S` of a kill may be the killed scorer's
    last writes, so the search starts that much later (and the time includes it).
    """
    grace_ms = int(IN_FLIGHT_S * 1000)
    found = [recovery_s(observed.prediction_times, kill + grace_ms) for kill in kills]
    return [None if f is None else f + IN_FLIGHT_S for f in found]


def trainer_kill(ctx: Context) -> RunResult:
    """The trainer is killed five times and restarted at once by the harness.

    The time to recover is from the restart to its first new model version;
    versions of every model must keep going up, and no point may be lost.
    """
    brokers = ctx.pool.get(1)
    with ctx.live("trainer-kill", brokers) as run:
        if not run.warm_up():
            return run.finish(faults=0)
        observed = run.watcher.observed
        restarts: list[int] = []
        for _ in range(KILLS):
            run.services.kill("trainer")
            run.start_trainer()
            restarts.append(run.fault_over())
            wait_new_model(run, observed, restarts[-1])
            run.hold(1.0)
        result = run.finish(recoveries=lambda seen: new_versions(seen, restarts), faults=KILLS)
        check_versions_rise(observed, result)
        return result


def new_versions(observed: Observed, restarts: list[int]) -> list[float | None]:
    """Seconds from each restart of the trainer to the next model version published."""
    stamps = [ms for ms, _, _ in observed.models]
    return [first_after_s(stamps, restart) for restart in restarts]


def wait_new_model(run: LiveRun, observed: Observed, since_ms: int) -> bool:
    """Wait (bounded) for a model version published after ``since_ms``."""
    return run.wait_until(
        lambda: first_after_s((ms for ms, _, _ in observed.models), since_ms) is not None,
        run.load.recover_timeout_s,
    )


def check_versions_rise(observed: Observed, result: RunResult) -> None:
    """Fail ``result`` when the versions of a model name did not only go up."""
    names = sorted({name for _, name, _ in observed.models})
    for name in names:
        versions = observed.versions(name)
        backwards = [(a, b) for a, b in itertools.pairwise(versions) if b <= a]
        if backwards:
            a, b = backwards[0]
            result.fail(f"versions of {name!r} did not only go up: v{a} then v{b}")
        elif versions:
            result.notes.append(f"{name}: v{versions[0]} to v{versions[-1]}")


# --- poison ------------------------------------------------------------------------------


def poison(ctx: Context) -> RunResult:
    """Bad and hostile records in a live stream, one at a time.

    Every bad record must land in ``deadletter`` with an ``error`` header, no
    consumer may stop, and every valid point must be predicted (the huge-feature
    point too, unless it is dead-lettered with a reason).
    """
    brokers = ctx.pool.get(1)
    with ctx.live("poison", brokers) as run:
        if not run.warm_up():
            return run.finish(faults=0)
        observed = run.watcher.observed
        latest = max(observed.versions(MODEL), default=0)
        records = [
            *point_poisons(run.run_id, ctx.load.features),
            *request_poisons(run.run_id, run.topics, ctx.load.features),
            *model_poisons(run.run_id, MODEL, latest + 1, ctx.load.features),
        ]
        written = write_poisons(run, records)
        run.fault_over()

        def excused() -> set[str]:
            return {
                w.poison.point_id
                for w in written
                if w.poison.point_id is not None and dead_letters_of(observed, w)
            }

        result = run.finish(excused=excused)
        check_poisons(observed, written, result)
        for w in written:
            model = w.poison.meta.get("model")
            if model is not None and tuple(model) in observed.served:
                result.notes.append(f"{w.poison.name}: it served predictions")
        ours = {(w.partition, w.offset) for w in written if w.topic == run.topics.points}
        foreign = len(observed.invalid_at - ours)
        if foreign:
            result.notes.append(
                f"{foreign} bad record(s) on points that the suite did not write there "
                "(a reply sent to the points topic?)"
            )
        return result


@dataclass(frozen=True)
class Written:
    """A poison record as the broker stored it."""

    poison: Poison
    topic: str
    partition: int
    offset: int


def write_poisons(run: LiveRun, records: list[Poison], gap_s: float = 0.3) -> list[Written]:
    """Write each record (waiting for its ack) a little apart; those the broker took."""
    producer = make_producer(run.settings, linger_ms=0)
    written = []
    try:
        for record in records:
            topic = getattr(run.topics, record.topic)
            try:
                meta = producer.send(
                    topic,
                    key=record.key,
                    value=record.value,
                    headers=list(record.headers),
                    partition=record.partition,
                ).get(timeout=30)
                written.append(Written(record, topic, meta.partition, meta.offset))
            except KafkaError as exc:
                run.result.notes.append(f"{record.name}: the broker refused it ({exc})")
            run.hold(gap_s)
    finally:
        producer.close(timeout=10)
    return written


def dead_letters_of(observed: Observed, record: Written) -> list[DeadLetter]:
    """The dead letters (with a reason) that name ``record`` as their origin, or carry its value."""
    wanted = digest(record.poison.value)
    return [
        d
        for d in observed.deadletters
        if d.error
        and (d.came_from(record.topic, record.partition, record.offset) or d.value_digest == wanted)
    ]


def check_poisons(observed: Observed, written: list[Written], result: RunResult) -> None:
    """Fail ``result`` for each poison record not handled as it must be."""
    for record in written:
        poison = record.poison
        letters = dead_letters_of(observed, record)
        if poison.expect == PREDICTED and poison.point_id in observed.predicted:
            result.notes.append(f"{poison.name}: predicted")
            continue
        if not letters:
            what = "neither predicted nor dead-lettered" if poison.expect == PREDICTED else ""
            result.fail(f"{poison.name}: {what or 'not in deadletter with an error header'}")
            continue
        reasons = "; ".join(sorted({f"{d.service or '?'}: {d.error}"[:120] for d in letters}))
        changed = any(d.value_digest != digest(poison.value) for d in letters)
        altered = ", value altered" if changed else ""
        result.notes.append(f"{poison.name}: dead-lettered{altered} ({reasons})")


# --- the list ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A named scenario, the brokers it runs on, and what it does."""

    name: str
    brokers: int
    run: Callable[[Context], RunResult]

    @property
    def summary(self) -> str:
        """The first line of the scenario's docstring."""
        return (self.run.__doc__ or "").strip().splitlines()[0]


#: In the order they run: the single-node ones first, then the cluster.
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("scorer-kill", 1, scorer_kill),
        Scenario("trainer-kill", 1, trainer_kill),
        Scenario("poison", 1, poison),
        Scenario("broker-kill", 1, broker_kill),
        Scenario("broker-restart", 1, broker_restart),
        Scenario("leader-kill", 3, leader_kill),
        Scenario("leader-kill-eos", 3, leader_kill_exactly_once),
    )
}


def run_scenario(ctx: Context, scenario: Scenario) -> RunResult:
    """One run; an error of the harness itself becomes a failed result, not a crash."""
    started = time.monotonic()
    try:
        return scenario.run(ctx)
    except (StreamscoreError, KafkaError, OSError, RuntimeError) as exc:
        log.exception("%s: the harness failed", scenario.name)
        result = RunResult(scenario.name, ctx.client)
        result.fail(f"harness error: {type(exc).__name__}: {exc}")
        result.seconds = time.monotonic() - started
        return result
