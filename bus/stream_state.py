"""What the parts of a `bus.stream.StreamRunner` share: its clients, the open work, the commits.

`RunState` is a plain holder: the runner's loop, its commit machinery
(`bus.stream_commit`), its client handling (`bus.stream_clients`) and its fault
handling (`bus.stream_faults`) read and change it in place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bus.clients.base import Consumer, Driver, Producer, TopicPartition
from bus.deadletter import DeadLetters
from bus.stream_types import ChunkStep, Outcome, Step, StreamConfig, StreamStats
from core.errors import BusError
from core.shutdown import StopFlag

if TYPE_CHECKING:
    from bus.stream_commit import Flight

# the runner's parts log as the runner does: one logger for the whole loop
log = logging.getLogger("bus.stream")


class StoppedError(Exception):
    """The stop flag was set (or the stop's deadline passed) during a blocking client call."""


class RunState:
    """The clients of one run and the work done since the last commit."""

    def __init__(
        self,
        driver: Driver,
        config: StreamConfig,
        step: Step | ChunkStep,
        stop: StopFlag,
        clock: Callable[[], float],
    ) -> None:
        self.driver = driver
        self.config = config
        self.step = step
        self.columnar = isinstance(step, ChunkStep)
        self.stop = stop
        self.clock = clock
        self.eos = config.exactly_once
        self.stats = StreamStats()
        self.producer: Producer | None = None
        self.consumer: Consumer | None = None
        self.deadletters: DeadLetters | None = None
        # next offsets read since the last commit (what the next commit commits)
        self.pending: dict[TopicPartition, int] = {}
        # where the last commit left each partition (None: the beginning); absent: ask the group
        self.origin: dict[TopicPartition, int | None] = {}
        # offsets committed asynchronously since the last synchronous commit
        self.unsynced: dict[TopicPartition, int] = {}
        self.done: list[Outcome] = []  # outcomes since the last commit
        self.tally = StreamStats()  # their work, counted into stats at the commit
        self.written = False  # something was sent since the last commit
        self.in_txn = False
        self.dirty = False  # a fault or a rebalance lost the uncommitted work: redo it
        self.fault_since: float | None = None
        self.backoff = config.backoff_s
        self.doing = "start"
        self.next_partition_check = 0.0
        self.flight: Flight | None = None  # the background commit in flight
        self.held: list[Outcome] = []  # outcomes that came while it flies, not written yet
        self.commit_wanted = False  # an outcome asked for a commit while it flies
        self.deadline: float | None = None  # when the stop's waits end (set at stop)

    def drop_work(self) -> None:
        """Forget the work done since the last commit (it is read again)."""
        self.pending = {}
        self.done = []
        self.tally = StreamStats()
        self.written = False

    def blocking(self, call: Callable[[], object], deadline: float | None = None) -> None:
        """Run a blocking client call on a helper thread, and wait for it.

        Raises what the call raised, or `StoppedError` when the stop flag is set first
        (or, with a ``deadline``, when it passes): the call then goes on alone, and
        the loop stops without it.
        """
        done = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            try:
                call()
            except BaseException as exc:
                failed.append(exc)
            finally:
                done.set()

        name = f"{self.config.service}-{self.doing}"
        threading.Thread(target=run, name=name, daemon=True).start()
        while not done.wait(0.05):
            if deadline is None and self.stop.is_set():
                raise StoppedError(self.doing)
            if deadline is not None and time.monotonic() >= deadline:
                raise StoppedError(self.doing)
        if failed:
            raise failed[0]


def close_quietly(producer: Producer, timeout_s: float = 10.0) -> None:
    """Close ``producer``, logging (not raising) a bus error."""
    try:
        producer.close(timeout_s)
    except BusError as exc:
        log.debug("closing a producer: %s", exc)


def names(partitions: Sequence[TopicPartition]) -> str:
    """``topic[partition], ...`` for a log line (``nothing`` when empty)."""
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
