"""The background threads that keep a `Dashboard` up to date from Kafka.

- one `bus.table.Table` per topic: ``models`` (compacted) from its beginning,
  ``scores``, ``deadletter``, ``requests`` and ``replies`` from their last
  records on; every partition, no consumer group, read_committed;
- ``predictions`` only sampled: now and then the newest record of each
  partition is read, to tell which model version serves (reading every
  prediction would cost the monitor as much as the scorer);
- consumer groups and topic end offsets sampled through the admin client.

Each thread waits for its topic to exist and never gives up: after a bus
failure it opens its reader again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from bus.clients.base import Driver, TopicPartition, TransientBusError
from bus.partitions import wait_for_partitions
from bus.table import Table
from bus.topics import Topics
from core.errors import BusError
from core.shutdown import StopFlag
from monitor.config import MonitorConfig
from monitor.groups import GroupProbe
from monitor.records import Recorder

log = logging.getLogger(__name__)

POLL_S = 0.5
REOPEN_S = 2.0
#: How far back from its end each predictions partition is read when sampled.
PEEK_BACK = 20
PEEK_POLLS = 10


class Feed:
    """Threads that read the monitor's topics and groups into a `Recorder`'s dashboard."""

    def __init__(
        self,
        driver: Driver,
        topics: Topics,
        recorder: Recorder,
        config: MonitorConfig,
        admin_factory: Callable[[], Any],
    ) -> None:
        self._driver = driver
        self._topics = topics
        self._recorder = recorder
        self._config = config
        self._admin_factory = admin_factory
        self._stop = StopFlag()
        self._threads: list[threading.Thread] = []

    def start(self) -> Feed:
        """Start every reader in a daemon thread."""
        c, t = self._config, self._topics
        tails: dict[str, int | None] = {
            t.models: None,
            t.scores: c.scores_tail,
            t.deadletter: c.deadletters,
            t.requests: c.requests_tail,
            t.replies: c.requests_tail,
        }
        for topic, tail in tails.items():
            self._spawn(f"monitor-{topic}", self._follow, topic, tail)
        self._spawn("monitor-predictions", self._sample_predictions)
        self._spawn("monitor-groups", self._sample_groups)
        return self

    def close(self) -> None:
        """Stop every thread."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=self._forever, args=(target, *args), name=name)
        thread.daemon = True
        thread.start()
        self._threads.append(thread)

    def _forever(self, target: Callable[..., None], *args: Any) -> None:
        while not self._stop.is_set():
            try:
                target(*args)
            except BusError as exc:
                log.warning("monitor: %s; trying again in %.0f s", exc, REOPEN_S)
            except Exception:  # a bug must not end the feed of a running dashboard
                log.exception("monitor feed failed; trying again in %.0f s", REOPEN_S)
            self._stop.wait(REOPEN_S)

    def _follow(self, topic: str, tail: int | None) -> None:
        with Table(self._driver, topic, tail=tail, topic_wait_s=None, stop=self._stop) as table:
            table.open()
            loaded = False
            while not self._stop.is_set():
                for record in table.poll(POLL_S):
                    self._recorder.apply(record)
                if not loaded and topic == self._topics.models and table.caught_up():
                    loaded = True
                    self._recorder.dashboard.models_loaded()

    def _sample_predictions(self) -> None:
        """Read the newest prediction of each partition, every ``groups_every_s``."""
        topic = self._topics.predictions
        consumer = self._driver.consumer(group_id=None, read_committed=True)
        try:
            ids = wait_for_partitions(consumer, topic, None, stop=self._stop)
            tps = [TopicPartition(topic, p) for p in ids]
            consumer.assign(tps)
            seen: dict[TopicPartition, int] = {}
            while not self._stop.wait(self._config.groups_every_s):
                try:
                    self._peek(consumer, tps, seen)
                except TransientBusError as exc:
                    log.debug("sampling %r: %s", topic, exc)
        finally:
            consumer.close()

    def _peek(
        self, consumer: Any, tps: list[TopicPartition], seen: dict[TopicPartition, int]
    ) -> None:
        """Apply the newest record of each partition that grew (markers may end a log)."""
        ends = consumer.end_offsets(tps)
        moved = [tp for tp in tps if ends[tp] > 0 and seen.get(tp) != ends[tp]]
        for tp in moved:
            consumer.seek(tp, max(0, ends[tp] - PEEK_BACK))
        newest: dict[TopicPartition, Any] = {}
        for _ in range(PEEK_POLLS):
            if all(consumer.position(tp) >= ends[tp] for tp in moved):
                break
            for record in consumer.poll(0.2):
                if record.offset < ends[record.tp]:
                    newest[record.tp] = record
        for tp in moved:
            seen[tp] = ends[tp]
        for record in newest.values():
            self._recorder.apply(record)

    def _sample_groups(self) -> None:
        admin = self._admin_factory()
        consumer = self._driver.consumer(group_id=None)
        t = self._topics
        watched = [t.points, t.models, t.predictions, t.scores, t.deadletter, t.requests, t.replies]
        probe = GroupProbe(admin, consumer, watched)
        try:
            while not self._stop.is_set():
                groups, topics = probe.sample()
                self._recorder.dashboard.add_groups(groups, topics)
                self._stop.wait(self._config.groups_every_s)
        finally:
            consumer.close()
            admin.close()
