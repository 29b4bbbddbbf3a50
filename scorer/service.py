"""The scorer as a service: its two steps, each run by the stream kernel, and the models feed.

`Scorer` is given a client driver (`bus.clients.driver_for`, or the in-memory
driver in unit tests) and builds nothing else of Kafka: the kernel
(`bus.stream.StreamRunner`) owns the loops, delivery modes, retries and
shutdown. Points are scored on the calling thread; requests are answered on a
thread of their own, by a second runner with its own consumer group, so they
never wait behind the points backlog.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bus.clients.base import Driver
from bus.partitions import wait_for_partitions
from bus.signing import ModelKey
from bus.stream import StreamConfig, StreamRunner, StreamStats, retry_s_from_env
from bus.topics import Topics
from core.errors import BusError
from core.shutdown import StopFlag
from scorer.config import ScorerConfig
from scorer.models_feed import ModelFeed, describe
from scorer.policy import ServingPolicy
from scorer.quality import Scoreboard
from scorer.registry import LiveModel, ModelRegistry
from scorer.requests import RequestStep
from scorer.step import ScoringStep

log = logging.getLogger(__name__)

PARTITIONS_EVERY_S = 30.0


@dataclass
class ScorerStats:
    """What the scorer has had committed since it started."""

    points: int = 0
    predictions: int = 0
    deadletters: int = 0
    batches: int = 0
    aborted: int = 0
    answered: int = 0


class Scorer:
    """Consumes ``points``, ``models`` and ``requests``; publishes predictions, scores, replies.

    With a ``model_key`` only model versions signed with it are loaded.
    """

    def __init__(
        self,
        driver: Driver,
        topics: Topics,
        config: ScorerConfig,
        *,
        stop: StopFlag | None = None,
        clock: Callable[[], float] = time.time,
        retry_s: float | None = None,
        model_key: ModelKey | None = None,
    ) -> None:
        self._driver = driver
        self._topics = topics
        self._config = config
        self._stop = stop or StopFlag()
        self._requests_stop = StopFlag()
        retry = retry_s_from_env() if retry_s is None else retry_s
        self.registry = ModelRegistry(config.model_history)
        self.policy = ServingPolicy(config.policy, config.hysteresis, config.min_scored)
        board = Scoreboard(config.window, config.scores_every, config.scores_interval_s, clock())
        self.board = board
        self._feed = ModelFeed(
            driver,
            topics.models,
            self.registry,
            topics.deadletter,
            key=model_key,
            stop=self._stop,
        )
        self._reply_partitions = _PartitionCount(driver, topics.replies, self._stop)
        self.step = ScoringStep(
            topics,
            registry=self.registry,
            policy=self.policy,
            board=board,
            feed=self._feed,
            prediction_partitions=_PartitionCount(driver, topics.predictions, self._stop)(),
            model_poll_interval_s=config.model_poll_interval_s,
            clock=clock,
        )
        self.requests = RequestStep(
            replies_topic=topics.replies,
            reply_partitions=self._reply_partitions,
            registry=self.registry,
            serving=self.serving,
            max_age_s=config.request_max_age_s,
            clock=clock,
        )
        self._points_runner = StreamRunner(
            driver,
            StreamConfig(
                topics=(topics.points,),
                group_id=config.group_id,
                service="scorer",
                delivery=config.delivery,
                transactional_id=config.transactional_id if config.exactly_once else None,
                max_batch=config.max_batch,
                poll_timeout_s=config.poll_timeout_ms / 1000,
                retry_s=retry,
                deadletter_topic=topics.deadletter,
            ),
            self.step,
            stop=self._stop,
        )
        self._requests_runner = StreamRunner(
            driver,
            StreamConfig(
                topics=(topics.requests,),
                group_id=config.requests_group_id,
                service="scorer-requests",
                max_batch=500,
                poll_timeout_s=0.1,
                retry_s=retry,
                deadletter_topic=topics.deadletter,
                producer_options={"linger_ms": 0},
                consumer_options={"fetch_max_wait_ms": 10},
            ),
            self.requests,
            stop=self._requests_stop,
        )
        self._requests_failed: BaseException | None = None

    def serving(self) -> LiveModel | None:
        """The model answering right now (None while holding)."""
        return self.step.serving()

    def run(self) -> ScorerStats:
        """Score until stopped; then finish the batch, flush, commit and leave the groups."""
        self._feed.catch_up()
        thread = threading.Thread(target=self._answer, name="requests", daemon=True)
        thread.start()
        log.info(
            "scoring %s -> %s (%s, policy %s); models: %s",
            self._topics.points,
            self._topics.predictions,
            self._config.delivery,
            self._config.policy,
            describe(self.registry) or "none yet (holding)",
        )
        try:
            points = self._points_runner.run()
        finally:
            self._requests_stop.set()
            thread.join(timeout=30)
            self._feed.close()
        self._log_stats(points)
        if self._requests_failed is not None:
            raise BusError(f"answering requests failed: {self._requests_failed}")
        return self.stats

    def _answer(self) -> None:
        try:
            self._requests_runner.run()
        except BaseException as exc:
            log.error("answering requests failed: %s", exc)
            self._requests_failed = exc
            self._stop.set()  # the scorer stops with it, and says why

    @property
    def stats(self) -> ScorerStats:
        """What has been committed so far."""
        step, points = self.step.stats, self._points_runner.stats
        return ScorerStats(
            points=step.points,
            predictions=step.predictions,
            deadletters=step.deadletters,
            batches=points.batches,
            aborted=points.aborts,
            answered=self.requests.answered,
        )

    def _log_stats(self, points: StreamStats) -> None:
        stats = self.stats
        log.info(
            "points %d, predictions %d, dead letters %d, requests %d, faults %d; live: %s",
            stats.points,
            stats.predictions,
            stats.deadletters,
            stats.answered,
            points.faults,
            describe(self.registry) or "none",
        )


class _PartitionCount:
    """The partition count of a topic, asked again at most every `PARTITIONS_EVERY_S`."""

    def __init__(self, driver: Driver, topic: str, stop: StopFlag) -> None:
        self._driver = driver
        self._topic = topic
        self._stop = stop
        self._count = 0
        self._asked = -PARTITIONS_EVERY_S
        self._lock = threading.Lock()

    def __call__(self) -> int:
        now = time.monotonic()
        with self._lock:
            if now - self._asked >= PARTITIONS_EVERY_S:
                self._asked = now
                consumer = self._driver.consumer(group_id=None)
                try:
                    ids = wait_for_partitions(consumer, self._topic, stop=self._stop)
                finally:
                    consumer.close()
                self._count = max(self._count, len(ids))
            return self._count
