"""One run of one scenario: fresh topics, the services, a steady stream, the watcher, the count.

`LiveRun` creates the topics of the contract under a prefix of its own, starts
``streamscore trainer``, one or more ``streamscore scorer`` and ``streamscore
producer`` (labelled points at a steady rate, ids unique to the run) as child
processes, and follows the topics with a `Watcher`. A scenario warms it up,
injects its faults (noting when each ended) and calls `finish`, which lets the
stream run a little longer, stops the producer, waits until every valid point
is predicted (or the wait is over) and counts. Leaving the ``with`` block stops
every process and deletes the topics, also after an error or a Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from kafka.errors import KafkaError

from bus.clients import make_admin
from bus.topics import TopicLayout, Topics, ensure_topics
from chaos.cluster import ChaosBrokers
from chaos.counts import Observed, RunResult, duplicated, judge, lost, recovery_s
from chaos.processes import Services, last_error, producer_sent, shielded
from chaos.watch import Watcher
from core.errors import StreamscoreError

log = logging.getLogger(__name__)

#: Variables of the caller's environment that must not reach the services.
_OWN_PREFIXES = ("STREAMSCORE_", "KAFKA_")


@dataclass(frozen=True)
class Load:
    """The stream every run carries, and how long each wait may last."""

    rate: float = 2000.0
    features: int = 3
    partitions: int = 6
    publish_every: int = 2000
    warmup_timeout_s: float = 90.0
    steady_s: float = 3.0
    tail_s: float = 5.0
    recover_timeout_s: float = 60.0
    drain_timeout_s: float = 60.0
    stall_s: float = 25.0


class LiveRun:
    """Topics, services, stream and watcher of one run (a context manager)."""

    def __init__(
        self,
        scenario: str,
        client: str,
        brokers: ChaosBrokers,
        log_dir: Path,
        load: Load,
        *,
        delivery: str = "at-least-once",
        scorers: tuple[str, ...] = ("scorer",),
    ) -> None:
        self.scenario = scenario
        self.client = client
        self.brokers = brokers
        self.load = load
        self.delivery = delivery
        self.scorers = scorers
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"chaos-{self.run_id}-{scenario}."
        self.env = self._env()
        self.settings = brokers.settings()
        self.topics = Topics.with_prefix(self.prefix)
        self.services = Services(log_dir, self.env)
        self.result = RunResult(scenario, client)
        self.fault_ends: list[int] = []  # epoch ms at which each fault was over
        self.started = time.monotonic()
        self._watcher: Watcher | None = None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.brokers.bootstrap,
                "STREAMSCORE_KAFKA_CLIENT": self.client,
                "STREAMSCORE_TOPIC_PREFIX": self.prefix,
                "STREAMSCORE_PARTITIONS": str(self.load.partitions),
                "STREAMSCORE_REPLY_PARTITIONS": "4",
                "STREAMSCORE_TRAINER_GROUP": f"{self.prefix}trainer",
                "STREAMSCORE_TRAINER_TRANSACTIONAL_ID": f"{self.prefix}trainer",
                "STREAMSCORE_TRAINER_PUBLISH_EVERY": str(self.load.publish_every),
                "STREAMSCORE_SCORER_GROUP": f"{self.prefix}scorer",
                "STREAMSCORE_SCORER_REQUESTS_GROUP": f"{self.prefix}requests",
                "STREAMSCORE_SCORER_DELIVERY": self.delivery,
                "STREAMSCORE_LOG_LEVEL": "INFO",
                # signed models, as a deployment guarding `models` runs: the trainer
                # signs, the scorer refuses versions anyone else wrote
                "STREAMSCORE_MODEL_KEY": secrets.token_hex(32),
            }
        )
        return env

    @property
    def watcher(self) -> Watcher:
        """The run's watcher (once the run is entered)."""
        if self._watcher is None:
            raise RuntimeError("the run has not started")
        return self._watcher

    # --- start and stop ----------------------------------------------------------------

    def __enter__(self) -> LiveRun:
        try:
            ensure_topics(
                self.settings,
                self.topics,
                TopicLayout(partitions=self.load.partitions, reply_partitions=4),
            )
            self._watcher = Watcher(
                self.settings, self.topics, self.load.features, f"{self.run_id}-p-"
            )
            self.start_trainer()
            for name in self.scorers:
                self.start_scorer(name)
            self.services.start(
                "producer",
                [
                    "producer",
                    "--rate",
                    str(self.load.rate),
                    "--features",
                    str(self.load.features),
                    "--run-id",
                    self.run_id,
                    "--progress-interval",
                    "10",
                ],
            )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def start_trainer(self) -> None:
        """Start (or start again) the trainer."""
        self.services.start("trainer", ["trainer"])

    def start_scorer(self, name: str) -> None:
        """Start (or start again) a scorer of the run's group, with its own transactional id."""
        self.services.start(
            name, ["scorer"], STREAMSCORE_SCORER_TRANSACTIONAL_ID=f"{self.prefix}{name}"
        )

    def close(self) -> None:
        """Stop every process, close the watcher, delete the topics (best effort, bounded)."""
        with shielded():
            self._close()

    def _close(self) -> None:
        self.services.stop_all()
        if self._watcher is not None:
            self._watcher.close()
        admin = None
        try:
            admin = make_admin(self.settings, request_timeout_ms=10_000)
            admin.delete_topics(list(self.topics.all().values()), timeout_ms=10_000)
        except (KafkaError, StreamscoreError) as exc:
            log.warning("could not delete the topics of %s: %s", self.prefix, exc)
        finally:
            if admin is not None:
                admin.close()

    # --- waiting -------------------------------------------------------------------------

    def wait_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Follow the topics until ``done()`` or the timeout; note services that exit."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.note_exits()
            if done():
                return True
            if time.monotonic() >= deadline:
                return False
            self.watcher.poll(0.2)

    def hold(self, seconds: float) -> None:
        """Let the stream run for ``seconds`` while following it."""
        self.wait_until(lambda: False, seconds)

    def note_exits(self) -> None:
        """Record services that exited by themselves, with their last error line."""
        for what in self.services.check():
            self.result.exited.append(what)
            name = what.split(" ", 1)[0]
            self.result.notes.append(f"{what}: {last_error(self.services[name].log_path)}")

    def warm_up(self) -> bool:
        """Wait for the first predictions, then a few steady seconds; False if none came."""
        observed = self.watcher.observed
        self.wait_until(
            lambda: bool(observed.predicted) or self.pipeline_down(), self.load.warmup_timeout_s
        )
        if not observed.predicted:
            why = "the pipeline stopped" if self.pipeline_down() else "none came"
            self.result.fail(
                f"no prediction within {self.load.warmup_timeout_s:.0f} s of the start ({why})"
            )
            return False
        self.hold(self.load.steady_s)
        return True

    def pipeline_down(self) -> bool:
        """True when the trainer or every scorer is gone: no prediction can come any more."""
        running = self.services.running
        return not running("trainer") or not any(running(name) for name in self.scorers)

    def fault_over(self, at: float | None = None) -> int:
        """Note that a fault ended now (or at epoch seconds ``at``); its time in ms."""
        end = int((time.time() if at is None else at) * 1000)
        self.fault_ends.append(end)
        return end

    def wait_recovered(self, fault_end_ms: int, grace_s: float = 0.0) -> bool:
        """Wait (bounded) until every active partition had a prediction after the fault.

        ``grace_s`` skips what was appended just after the fault's end (writes of a
        killed process still in flight). Only pacing: the figures come at the end.
        """
        times = self.watcher.observed.prediction_times
        since = fault_end_ms + int(grace_s * 1000)
        return self.wait_until(
            lambda: recovery_s(times, since) is not None, self.load.recover_timeout_s
        )

    # --- the end ----------------------------------------------------------------------

    def finish(
        self,
        *,
        recoveries: Callable[[Observed], list[float | None]] | None = None,
        faults: int = 1,
        excused: Callable[[], set[str]] = set,
    ) -> RunResult:
        """Stop the stream, wait for the last predictions, count; the run's result.

        ``recoveries`` computes the times to recover from everything seen (default:
        from each fault's end to the next prediction of every partition). It runs
        once the topics are read to their end, so a watcher that fell behind on a
        busy machine cannot make them wrong. ``excused`` ids may stay unpredicted
        (valid points dead-lettered with a reason).
        """
        watcher = self.watcher
        self.hold(self.load.tail_s)
        code = self.services.stop("producer")
        if code not in (0, None) and "producer" not in " ".join(self.result.exited):
            self.result.exited.append(f"producer (exit {code})")
            log_path = self.services["producer"].log_path
            self.result.notes.append(f"producer (exit {code}): {last_error(log_path)}")
        self.result.sent = producer_sent(self.services["producer"].log_path)

        drain_from = time.monotonic()

        def drained() -> bool:
            if not watcher.pending or watcher.pending <= excused():
                return True
            if not any(self.services.running(name) for name in self.scorers):
                return True
            quiet_since = max(drain_from, watcher.last_prediction_at)
            return time.monotonic() - quiet_since > self.load.stall_s

        self.wait_until(drained, self.load.drain_timeout_s)
        if not watcher.catch_up(timeout_s=60):
            self.result.notes.append("the watcher could not read every topic to its end")
        self.note_exits()
        return self.count(recoveries=recoveries, faults=faults, excused=excused())

    def count(
        self,
        *,
        recoveries: Callable[[Observed], list[float | None]] | None,
        faults: int,
        excused: set[str],
    ) -> RunResult:
        """Fill in and judge the result from what the watcher saw."""
        observed = self.watcher.observed
        result = self.result
        result.points = len(observed.valid)
        missing = lost(observed.valid, observed.predicted, excused)
        result.lost = len(missing)
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            result.notes.append(f"never predicted: {shown}")
        ours = sum(1 for i in observed.valid if i.startswith(f"{self.run_id}-p-"))
        if result.sent is not None and result.sent > ours:
            result.lost += result.sent - ours
            result.notes.append(
                f"the producer reported {result.sent:,} points delivered, {ours:,} are on the topic"
            )
        copies = sum(1 for n in observed.point_copies.values() if n > 1)
        if copies:
            result.notes.append(f"{copies} point id(s) are on the points topic more than once")
        result.duplicated = duplicated(observed.predicted)
        result.deadletters = len(observed.deadletters)
        if recoveries is None:
            times = observed.prediction_times
            result.recoveries = [recovery_s(times, end) for end in self.fault_ends]
        else:
            result.recoveries = recoveries(observed)
        result.seconds = time.monotonic() - self.started
        return judge(result, exactly_once=self.delivery == "exactly-once", faults=faults)
