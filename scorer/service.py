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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bus.clients.base import Driver, Record, TopicPartition
from bus.messages import Score
from bus.partitions import wait_for_partitions
from bus.signing import ModelKey
from bus.stream import Outcome, Step, StreamConfig, StreamRunner, StreamStats, retry_s_from_env
from bus.topics import Topics
from core.errors import BusError, MessageError
from core.shutdown import StopFlag
from core.telemetry import (
    PREFIX,
    BuildInfo,
    Health,
    HealthCollector,
    TelemetryConfig,
    Watch,
    lag_watch,
    registry_of,
)
from scorer.config import ScorerConfig
from scorer.models_feed import ModelFeed, describe
from scorer.policy import ServingPolicy
from scorer.quality import Scoreboard
from scorer.registry import LiveModel, ModelRegistry
from scorer.requests import RequestStep
from scorer.step import ScoringStep

log = logging.getLogger(__name__)

PARTITIONS_EVERY_S = 30.0

#: How long the broker may hold the request runner's fetch while no request comes.
REQUESTS_FETCH_WAIT_MS = 100


@dataclass
class ScorerStats:
    """What the scorer has had committed since it started."""

    points: int = 0
    predictions: int = 0
    deadletters: int = 0
    batches: int = 0
    aborted: int = 0
    answered: int = 0
    model_predictions: dict[str, int] = field(default_factory=dict)
    calibrated: int = 0
    jumps: int = 0


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
        monotonic: Callable[[], float] = time.monotonic,
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
            recalibrate=config.recalibrate,
        )
        self.requests = self._request_step(clock)
        self.observed = ObservedStep(self.step, topics.scores)
        self._points_runner = StreamRunner(
            driver,
            _points_stream(topics, config, retry),
            self.observed,
            stop=self._stop,
            clock=monotonic,
        )
        self._requests_runner = StreamRunner(
            driver,
            requests_stream(topics, config, retry),
            self.requests,
            stop=self._requests_stop,
        )
        self._requests_failed: BaseException | None = None

    def _request_step(self, clock: Callable[[], float]) -> RequestStep:
        """The step answering inference requests with the model serving now."""
        return RequestStep(
            replies_topic=self._topics.replies,
            reply_partitions=self._reply_partitions,
            registry=self.registry,
            serving=self.serving,
            max_age_s=self._config.request_max_age_s,
            clock=clock,
        )

    def serving(self) -> LiveModel | None:
        """The model answering right now (None while holding)."""
        return self.step.serving()

    @property
    def points_stats(self) -> StreamStats:
        """The kernel's counts of the points loop (committed work, faults)."""
        return self._points_runner.stats

    def telemetry(
        self, config: TelemetryConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> Telemetry:
        """Metrics and health of this scorer (the lag read by a `Watch` not yet started)."""
        groups = {
            self._config.group_id: self._topics.points,
            self._config.requests_group_id: self._topics.requests,
        }
        driver = self._driver
        watch = lag_watch(lambda group: driver.consumer(group_id=group), groups, clock=clock)
        health = Health(
            stall_s=config.stall_s,
            progress=lambda: self.points_stats.records + self.points_stats.commits,
            backlog=lambda: watch.backlog(self._config.group_id) if self.serving() else 0,
            checks=[watch.problem, self._no_model],
            clock=clock,
        )
        registry = registry_of(
            BuildInfo("scorer"), ScorerMetrics(self), watch, HealthCollector("scorer", health)
        )
        return Telemetry(registry, health, watch)

    def _no_model(self) -> str | None:
        if self.serving() is not None:
            return None
        return (
            f"no model yet: holding {self._topics.points!r} until the trainer publishes a "
            f"version to {self._topics.models!r}"
        )

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
            model_predictions=dict(step.model_predictions),
            calibrated=step.calibrated,
            jumps=step.jumps,
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


# --- telemetry -------------------------------------------------------------------------


@dataclass(frozen=True)
class Telemetry:
    """What a service serves on its metrics port: the registry, the health, the bus watch."""

    registry: CollectorRegistry
    health: Health
    watch: Watch


class ObservedStep(Step):
    """The scoring step as the kernel runs it, watched: the last scores it published.

    Every hook goes to the step unchanged; `committed` also keeps the rolling scores
    of the outcome (the kernel counts the dead letters, by reason class too).
    """

    def __init__(self, step: Step, scores_topic: str) -> None:
        self.step = step
        self._scores_topic = scores_topic
        self._lock = threading.Lock()
        self._scores: dict[tuple[str, int], Score] = {}

    def process(self, records: list[Record]) -> Outcome:
        """The step's outcome."""
        return self.step.process(records)

    def committed(self, outcome: Outcome) -> None:
        """Tell the step; keep the published scores."""
        self.step.committed(outcome)
        scores = [
            value
            for output in outcome.outputs
            if output.topic == self._scores_topic
            for value in output.values
        ]
        with self._lock:
            for value in scores:
                try:
                    score = Score.from_bytes(value)
                except MessageError:  # not ours to judge: the step wrote it
                    continue
                self._scores[(score.model, score.version)] = score

    def rewind(self) -> None:
        """The step's."""
        self.step.rewind()

    def idle(self) -> Outcome | None:
        """The step's."""
        return self.step.idle()

    def tick(self) -> bool:
        """The step's."""
        return self.step.tick()

    def start(self, partitions: list[TopicPartition]) -> Mapping[TopicPartition, int | None]:
        """The step's."""
        return self.step.start(partitions)

    def revoked(self, partitions: list[TopicPartition]) -> None:
        """The step's."""
        self.step.revoked(partitions)

    def finish(self) -> Outcome | None:
        """The step's."""
        return self.step.finish()

    def scores(self) -> dict[tuple[str, int], Score]:
        """The last rolling score published of each (model, version)."""
        with self._lock:
            return dict(self._scores)


class ScorerMetrics(Collector):
    """The scorer's series, read from its state at each scrape."""

    def __init__(self, scorer: Scorer) -> None:
        self._scorer = scorer

    def collect(self) -> Iterator[Metric]:
        """Points, predictions (also per model), dead letters, answers, serving model, scores."""
        scorer = self._scorer
        stats, kernel = scorer.stats, scorer.points_stats
        service = ["service"]
        for name, text, value in (
            ("points_total", "points committed", stats.points),
            ("predictions_total", "predictions committed", stats.predictions),
            ("batches_total", "batches committed", kernel.batches),
            ("bus_faults_total", "transient bus faults ridden through", kernel.faults),
            (
                "scorer_recalibrations_total",
                "jumps of the serving version's residuals that started a recalibration",
                stats.jumps,
            ),
            (
                "scorer_recalibrated_predictions_total",
                "predictions served as a + b * the version's output (after a jump)",
                stats.calibrated,
            ),
        ):
            family = CounterMetricFamily(PREFIX + name, text, labels=service)
            family.add_metric(["scorer"], value)
            yield family
        by_model = CounterMetricFamily(
            PREFIX + "scorer_model_predictions_total",
            "predictions committed, per serving model's name",
            labels=["model"],
        )
        for name, count in sorted(stats.model_predictions.items()):
            by_model.add_metric([name], count)
        yield by_model
        answered = CounterMetricFamily(PREFIX + "requests_answered_total", "requests answered")
        answered.add_metric([], scorer.requests.answered)
        yield answered
        dead = CounterMetricFamily(
            PREFIX + "deadletters_total",
            "records sent to the dead-letter topic, by reason class",
            labels=["service", "reason"],
        )
        for reason, count in sorted(dict(kernel.reasons).items()):
            dead.add_metric(["scorer", reason], count)
        yield dead
        yield from self._models()

    def _models(self) -> Iterator[Metric]:
        scorer = self._scorer
        labels = ["model", "version"]
        serving = GaugeMetricFamily(
            PREFIX + "serving_model", "1 for the model version that answers now", labels=labels
        )
        model = scorer.serving()
        if model is not None:
            serving.add_metric([model.name, str(model.version)], 1.0)
        yield serving
        live = scorer.registry.latest()
        loaded = GaugeMetricFamily(
            PREFIX + "model_version", "the latest version loaded, per model", labels=["model"]
        )
        for name, latest in sorted(live.items()):
            loaded.add_metric([name], float(latest.version))
        yield loaded
        live_keys = {m.key for m in live.values()}
        scores = {k: v for k, v in scorer.observed.scores().items() if k in live_keys}
        for metric, text in (
            ("r2", "rolling R2 over the last window of labelled points"),
            ("rmse", "rolling RMSE over the last window of labelled points"),
            ("mae", "rolling MAE over the last window of labelled points"),
        ):
            family = GaugeMetricFamily(PREFIX + "rolling_" + metric, text, labels=labels)
            for (name, version), score in sorted(scores.items()):
                value = getattr(score, metric)
                if value is not None:
                    family.add_metric([name, str(version)], float(value))
            yield family
        count = GaugeMetricFamily(
            PREFIX + "rolling_window_points", "labelled points in the rolling window", labels=labels
        )
        for (name, version), score in sorted(scores.items()):
            count.add_metric([name, str(version)], float(score.count))
        yield count


def _points_stream(topics: Topics, config: ScorerConfig, retry_s: float) -> StreamConfig:
    """How the scorer reads the points topic (and writes predictions and scores)."""
    return StreamConfig(
        topics=(topics.points,),
        group_id=config.group_id,
        service="scorer",
        delivery=config.delivery,
        transactional_id=config.transactional_id if config.exactly_once else None,
        max_batch=config.max_batch,
        poll_timeout_s=config.poll_timeout_ms / 1000,
        retry_s=retry_s,
        deadletter_topic=topics.deadletter,
    )


def requests_stream(topics: Topics, config: ScorerConfig, retry_s: float) -> StreamConfig:
    """How the scorer answers inference requests: small batches, no lingering.

    Replies leave at once (``linger_ms`` 0). The broker answers a fetch as soon as a
    request is appended, so a long fetch wait costs no latency; a short one only
    makes an idle runner fetch (and wake) every few milliseconds.
    """
    return StreamConfig(
        topics=(topics.requests,),
        group_id=config.requests_group_id,
        service="scorer-requests",
        max_batch=500,
        poll_timeout_s=0.1,
        retry_s=retry_s,
        deadletter_topic=topics.deadletter,
        producer_options={"linger_ms": 0},
        consumer_options={"fetch_max_wait_ms": REQUESTS_FETCH_WAIT_MS},
    )
