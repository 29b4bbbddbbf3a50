"""What a stream step is and says: step interfaces, outcome, the runner's config and stats.

`bus.stream` runs these; the names are importable from there too.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bus.clients.base import Chunk, Headers, Record, TopicPartition
from bus.deadletter import MAX_DEADLETTER_BYTES
from core.env import env_float
from core.errors import ConfigError

DELIVERIES = ("at-least-once", "exactly-once")
MODES = ("subscribe", "assign")
DEFAULT_RETRY_S = 300.0
RETRY_ENV = "STREAMSCORE_BUS_RETRY_S"


def retry_s_from_env(env: Mapping[str, str] | None = None) -> float:
    """The retry budget for transient bus faults, in seconds (``STREAMSCORE_BUS_RETRY_S``)."""
    return env_float(os.environ if env is None else env, RETRY_ENV, DEFAULT_RETRY_S, minimum=0)


# --- what a step says ------------------------------------------------------------------


@dataclass(slots=True)
class Output:
    """Records for one topic, as columns; ``keys``, ``partitions``, ``headers`` are per value.

    A partition of None leaves the choice to the producer (by key, or spread).
    """

    topic: str
    values: list[bytes | None]
    keys: list[bytes | None] | None = None
    partitions: list[int | None] | None = None
    headers: list[Headers | None] | None = None


@dataclass(slots=True)
class Outcome:
    """What a step wants written for the records it was given, and whether to commit now.

    ``commit`` True: commit everything processed so far, with these outputs, now.
    False: keep going; the records stay uncommitted until an outcome commits
    (their outputs are sent already; in exactly-once mode inside the open
    transaction). ``context`` is the step's own, handed back to `Step.committed`
    (e.g. the rows to learn from once they are committed).
    """

    outputs: list[Output] = field(default_factory=list)
    deadletters: list[tuple[Record, str]] = field(default_factory=list)
    commit: bool = True
    context: Any = None

    def add(
        self,
        topic: str,
        values: list[bytes | None],
        keys: list[bytes | None] | None = None,
        partitions: list[int | None] | None = None,
        headers: list[Headers | None] | None = None,
    ) -> Outcome:
        """Add an output (returns self, so calls chain)."""
        self.outputs.append(Output(topic, values, keys, partitions, headers))
        return self


class StepHooks:
    """What the kernel tells a step besides its batches; every hook is optional.

    The kernel calls them all from its own thread, between batches.
    """

    def committed(self, outcome: Outcome) -> None:
        """``outcome``'s records and outputs are committed: make its lasting state changes.

        Called once per outcome, in order, after the commit that covered it.
        """

    def rewind(self) -> None:
        """The uncommitted work was lost (it will be read again): drop state derived from it."""

    def idle(self) -> Outcome | None:
        """A poll returned nothing: anything to write now (e.g. scores due on a timer)?"""
        return None

    def tick(self) -> bool:
        """Housekeeping before each poll; False holds the input (no poll this round).

        A group member that holds longer than the consumer's max poll interval
        (5 minutes by default) leaves the group; the partitions go to others.
        """
        return True

    def start(self, partitions: list[TopicPartition]) -> Mapping[TopicPartition, int | None]:
        """Assign mode: where to read these partitions from (an offset, or None: the beginning).

        Called once the producer holds its transactional id (older instances are
        fenced), before the first poll, and again for partitions added later.
        Partitions left out start at the group's committed offset (the beginning
        when there is none).
        """
        return {}

    def revoked(self, partitions: list[TopicPartition]) -> None:
        """Subscribe mode: these partitions went to another member; forget their state."""

    def finish(self) -> Outcome | None:
        """The loop is stopping: anything to write with the last commit?"""
        return None


class Step(StepHooks, ABC):
    """A service's processing of records.

    `process` must not change lasting state: it can be called again for the same
    records after a failure, or one record at a time. Lasting changes go to
    `committed`. An exception (other than `BusError`) means "bad record".
    """

    @abstractmethod
    def process(self, records: list[Record]) -> Outcome:
        """What to write for ``records`` (in offset order per partition)."""


class ChunkStep(StepHooks, ABC):
    """Like `Step`, for steps that take records as per-partition columns (`Chunk`)."""

    @abstractmethod
    def process_chunks(self, chunks: list[Chunk]) -> Outcome:
        """What to write for ``chunks``."""


# --- configuration and counters --------------------------------------------------------


@dataclass(frozen=True)
class StreamConfig:
    """How a `StreamRunner` reads, writes and retries.

    ``mode`` ``subscribe`` joins the consumer group for ``topics``; ``assign``
    reads every partition of them itself (no rebalancing), from where
    `StepHooks.start` says, and picks up partitions added later.
    ``background_commit`` (exactly-once only) commits each transaction on a
    thread while the step goes on (see the module's docstring);
    ``finish_timeout_s`` bounds how long a stop waits for those commits.
    """

    topics: tuple[str, ...]
    group_id: str
    service: str
    delivery: str = "at-least-once"
    transactional_id: str | None = None
    mode: str = "subscribe"
    max_batch: int = 5000
    poll_timeout_s: float = 0.1
    retry_s: float = DEFAULT_RETRY_S
    backoff_s: float = 0.1
    backoff_max_s: float = 10.0
    group_instance_id: str | None = None
    deadletter_topic: str = "deadletter"
    max_record_bytes: int = MAX_DEADLETTER_BYTES
    topic_wait_s: float = 15.0
    partition_check_s: float = 30.0
    producer_options: Mapping[str, Any] = field(default_factory=dict)
    consumer_options: Mapping[str, Any] = field(default_factory=dict)
    background_commit: bool = False
    finish_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.topics:
            raise ConfigError(f"{self.service}: no input topic to read")
        if self.delivery not in DELIVERIES:
            raise ConfigError(
                f"{self.service}: delivery {self.delivery!r}: expected one of "
                f"{', '.join(DELIVERIES)}"
            )
        if self.exactly_once and not self.transactional_id:
            raise ConfigError(f"{self.service}: exactly-once delivery needs a transactional id")
        if self.mode not in MODES:
            raise ConfigError(f"{self.service}: mode {self.mode!r}: expected subscribe or assign")
        if self.max_batch < 1:
            raise ConfigError(f"{self.service}: max batch {self.max_batch}: must be at least 1")
        if self.backoff_s <= 0 or self.backoff_max_s < self.backoff_s:
            raise ConfigError(
                f"{self.service}: backoff {self.backoff_s}s..{self.backoff_max_s}s: "
                "the start must be positive and at most the maximum"
            )
        if self.background_commit and not self.exactly_once:
            raise ConfigError(
                f"{self.service}: background commits are for exactly-once delivery "
                "(at-least-once already commits offsets asynchronously)"
            )

    @property
    def exactly_once(self) -> bool:
        """True in exactly-once delivery."""
        return self.delivery == "exactly-once"


@dataclass
class StreamStats:
    """What a runner has done: counts of committed work, and of faults.

    ``batches``, ``records`` (``chunks`` for a `ChunkStep`), ``outputs`` and
    ``deadletters`` count committed work only (work redone after a fault counts
    once); ``reasons`` counts the same dead letters by reason class
    (`core.telemetry.reason_class`: a few labels, never the text; copy it with
    ``dict()`` to read it from another thread). ``last_progress`` is the runner's
    clock at the end of the last round that went through without a fault (for
    health checks).
    """

    batches: int = 0
    records: int = 0
    chunks: int = 0
    outputs: int = 0
    deadletters: int = 0
    commits: int = 0
    aborts: int = 0
    rewinds: int = 0
    faults: int = 0
    last_progress: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, other: StreamStats) -> None:
        """Add the work counted in ``other`` (batches, records, chunks, outputs, dead letters)."""
        self.batches += other.batches
        self.records += other.records
        self.chunks += other.chunks
        self.outputs += other.outputs
        self.deadletters += other.deadletters
        if other.reasons:
            self.reasons.update(other.reasons)
