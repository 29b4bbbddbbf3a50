"""What every benchmark shares: the broker, fresh topics, service processes, the load.

``BenchContext`` uses the broker named by ``KAFKA_BOOTSTRAP_SERVERS`` or else the
project's local broker (started if needed, and stopped at the end only if it was
started here). Every benchmark gets topics under a prefix of its own
(``bench-<run>-<name>.``), deleted when the run ends, and runs the services the
way users do (``python -m streamscore <service>``) under a `Supervisor`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import TopicPartition

from bench.warmup import WARMUP_S, warm_broker
from bus.clients import make_admin, make_consumer
from bus.settings import KafkaSettings
from bus.topics import TopicLayout, Topics, ensure_topics
from core.env import env_float
from streamscore.broker import PROJECT_ROOT, BrokerConfig, LocalBroker
from streamscore.processes import Supervisor

log = logging.getLogger(__name__)


def load_average() -> str:
    """The 1, 5 and 15-minute load averages, as ``uptime`` shows them."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def wait_for_quiet(max_load: float, timeout_s: float) -> float:
    """Wait (up to ``timeout_s``) for the 1-minute load to fall to ``max_load``; return it."""
    deadline = time.monotonic() + timeout_s
    while True:
        one = os.getloadavg()[0]
        if one <= max_load or time.monotonic() >= deadline:
            return one
        time.sleep(5)


def rss_bytes(pid: int) -> int | None:
    """A process's resident memory (VmRSS), or None when /proc cannot tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def tree_rss_bytes(pid: int) -> int | None:
    """The resident memory of a process and its children, added up (None if it is gone)."""
    sizes = [rss_bytes(member) for member in process_tree(pid)]
    known = [size for size in sizes if size is not None]
    return sum(known) if known else None


@dataclass
class BenchContext:
    """The broker, the run's names and the services of one benchmark run."""

    env: dict[str, str]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    settings: KafkaSettings = field(init=False)
    home: Path = field(init=False)
    _broker: LocalBroker | None = field(default=None, init=False)
    _created: list[str] = field(default_factory=list, init=False)
    _supervisors: list[Supervisor] = field(default_factory=list, init=False)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False)
    #: what benchmarks of one run share (the pre-filled points topic), by name
    shared: dict[str, Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.settings = KafkaSettings.from_env(self.env)
        self.home = BrokerConfig.from_env(self.env).home / "bench" / self.run_id

    # --- the broker ---------------------------------------------------------------

    def open(self) -> str:
        """Make sure a broker answers; return a line saying which one."""
        if self.env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
            line = f"broker: {self.settings.bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS)"
        else:
            broker = LocalBroker(BrokerConfig.from_env(self.env))
            if broker.status().state != "up":
                self._broker = broker
            status = broker.up()
            self.settings = replace(self.settings, bootstrap_servers=status.bootstrap)
            started = ""
            if self._broker is not None:
                started = " (started for this run" + self._warm_up() + ")"
            line = f"broker: local, {status.bootstrap}{started}"
        return f"{line}, {self._partitions_note()}"

    def _warm_up(self) -> str:
        """Warm the broker just started (`bench.warmup`); a note for the broker line."""
        seconds = env_float(self.env, "BENCH_BROKER_WARMUP_S", WARMUP_S, minimum=0.0)
        if not seconds:
            return ""
        topic = self.create_topic(self.prefix("warmup") + "records", 6, {})
        read = warm_broker(self.settings, topic, 6, seconds)
        return f", warmed up for {seconds:g} s: {read:,} records"

    def _partitions_note(self) -> str:
        """How many topics and partitions the broker holds (the figures' context)."""
        consumer = make_consumer(self.settings, group_id=None)
        try:
            topics = consumer.topics()
            count = sum(len(consumer.partitions_for_topic(t) or ()) for t in topics)
        finally:
            consumer.close()
        return f"{len(topics):,} topics, {count:,} partitions"

    def stop_services(self) -> None:
        """Stop every process a benchmark started (run after each one, whatever happened)."""
        for process in self._processes:
            stop_process(process)
        self._processes.clear()
        for supervisor in self._supervisors:
            supervisor.stop_all(["producer", "gateway", "scorer", "trainer"])
        self._supervisors.clear()

    def close(self) -> None:
        """Stop every service, delete the run's topics, stop the broker if started here."""
        self.stop_services()
        self.delete_topics(self._created)
        self._created.clear()
        if self._broker is not None:
            self._broker.down()

    # --- names and topics ---------------------------------------------------------------

    def prefix(self, bench: str) -> str:
        """The topic prefix of one benchmark: ``bench-<run>-<bench>.``."""
        return f"bench-{self.run_id}-{bench}."

    def topics(self, bench: str, **overrides: str) -> Topics:
        """The contract's topics under the benchmark's prefix, created (6 partitions)."""
        topics = Topics.with_prefix(self.prefix(bench), **overrides)
        ensure_topics(self.settings, topics, TopicLayout.from_env(self.env))
        self._created.extend(topics.all().values())
        return topics

    def track(self, *names: str) -> None:
        """Delete these topics at the end of the run too."""
        self._created.extend(names)

    def create_topic(self, name: str, partitions: int, configs: Mapping[str, str]) -> str:
        """Create one topic (deleted at the end of the run) and wait until it is usable."""
        admin = make_admin(self.settings)
        try:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, partitions, 1, topic_configs=dict(configs))])
            admin.wait_for_topics([name])
        finally:
            admin.close()
        self._created.append(name)
        return name

    def delete_topics(self, names: list[str]) -> None:
        """Delete topics, best effort (a failure is logged, the figures stand)."""
        if not names:
            return
        admin = make_admin(self.settings)
        try:
            existing = set(admin.list_topics())
            doomed = sorted(set(names) & existing)
            if doomed:
                admin.delete_topics(doomed)
        except KafkaError as exc:
            log.warning("could not delete the run's topics: %s", exc)
        finally:
            admin.close()

    # --- services ---------------------------------------------------------------------

    def service_env(self, topics: Topics, **extra: str) -> dict[str, str]:
        """The environment of a service process on this broker and these topics."""
        env = {
            **self.env,
            "KAFKA_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers,
            "STREAMSCORE_TOPIC_PREFIX": topics.points[: -len("points")],
            "STREAMSCORE_LOG_LEVEL": self.env.get("STREAMSCORE_LOG_LEVEL", "INFO"),
        }
        env.update(extra)
        return env

    def supervisor(self, bench: str, topics: Topics, **extra: str) -> Supervisor:
        """A supervisor for one benchmark's services (logs under ``.streamscore/bench``)."""
        supervisor = Supervisor(
            self.home / bench / "run", self.home / bench / "logs", self.service_env(topics, **extra)
        )
        self._supervisors.append(supervisor)
        return supervisor

    def spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """Run ``python <args>`` from the project's folder, output in ``<home>/logs/<name>.log``."""
        log_file = self.home / "logs" / f"{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, *args],
                env={**env, "PYTHONUNBUFFERED": "1"},
                cwd=PROJECT_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._processes.append(process)
        return process


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM a process we started (SIGKILL after ``timeout_s``); its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process descended from it (e.g. a service's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time used so far by a process, its threads and its live children."""
    total, seen = 0.0, False
    for member in process_tree(pid):
        fields = _stat(member)
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            seen = True
    return total if seen else None


# --- reading what a run wrote ----------------------------------------------------------


@contextlib.contextmanager
def assigned(
    settings: KafkaSettings, topic: str
) -> Iterator[tuple[KafkaConsumer, list[TopicPartition]]]:
    """A group-less read_committed consumer assigned every partition of ``topic``."""
    consumer = make_consumer(settings, group_id=None)
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        yield consumer, partitions
    finally:
        consumer.close()


def end_offsets(settings: KafkaSettings, topic: str) -> dict[int, int]:
    """Partition -> end offset (high watermark) of ``topic``."""
    with assigned(settings, topic) as (consumer, partitions):
        ends = consumer.end_offsets(partitions)
    return {tp.partition: offset for tp, offset in ends.items()}


def committed_total(consumer: KafkaConsumer, partitions: list[TopicPartition]) -> int:
    """The sum of a group's committed offsets over ``partitions`` (0 where none)."""
    total = 0
    for tp in partitions:
        offset = consumer.committed(tp)
        total += offset or 0
    return total


def edge_timestamps(settings: KafkaSettings, topic: str, tail: int = 200) -> tuple[int, int]:
    """(first, last) record timestamps of ``topic``: over each partition's first and last records.

    With ``LogAppendTime`` these are the times the broker appended the first and the
    last record, so ``count / (last - first)`` is the rate it was written at.
    """
    first, last = 2**63, 0
    with assigned(settings, topic) as (consumer, partitions):
        starts = consumer.beginning_offsets(partitions)
        ends = consumer.end_offsets(partitions)
        for tp in partitions:
            if ends[tp] <= starts[tp]:
                continue
            consumer.assign([tp])
            head = _read(consumer, tp, starts[tp], starts[tp] + 1)
            # transaction markers take offsets too: read the tail up to the end
            rest = _read(consumer, tp, max(starts[tp], ends[tp] - tail), ends[tp])
            if head:
                first = min(first, head[0])
            if rest:
                last = max(last, rest[-1])
    return first, last


def _read(consumer: KafkaConsumer, tp: TopicPartition, start: int, end: int) -> list[int]:
    """The timestamps of one partition's records from ``start`` until its position is ``end``."""
    consumer.seek(tp, start)
    stamps: list[int] = []
    deadline = time.monotonic() + 30
    while consumer.position(tp) < end and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            stamps.extend(r.timestamp for r in records)
    return stamps


def wait_until(check: Callable[[], bool], timeout_s: float, every_s: float = 0.2) -> bool:
    """Call ``check()`` until it is true or ``timeout_s`` passed; return the last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every_s)
