"""The trainer: its step (`trainer.step.TrainingStep`) run by the stream kernel.

One trainer runs per group at a time. The kernel's producer is transactional
(``transactional_id``): starting a second copy fences the first, whose open
transaction is aborted and whose next one fails, so it stops with a message that
says so. The trainer reads every partition of ``points`` itself (the kernel's
assign mode, not a group subscription): a model must see the whole stream, and
splitting partitions between copies would train different models under one
name. The group id names the committed offsets (visible as the trainer's lag)
and the checkpoint.

Faults of the bus (a broker restart, a coordinator that moved or aborted the
transaction, timeouts) are ridden through by the kernel: it retries with backoff
for ``STREAMSCORE_BUS_RETRY_S``, and the step goes back to its last committed
checkpoint and trains again from its offsets. A stop (SIGTERM) finishes the
chunks in hand, publishes what is pending, and gives the last transaction
`FINISH_TIMEOUT_S` at most.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bus.clients.base import Driver
from bus.signing import ModelKey
from bus.stream import StreamConfig, StreamRunner, retry_s_from_env
from bus.topics import Topics
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
from trainer.config import TrainerConfig
from trainer.step import TrainerStats, TrainingStep

#: How long a stop waits for the last transactions before the trainer exits anyway.
FINISH_TIMEOUT_S = 3.0


def stream_config(
    topics: Topics, config: TrainerConfig, *, retry_s: float | None = None
) -> StreamConfig:
    """How the kernel runs the trainer: exactly-once, every partition, background commits."""
    return StreamConfig(
        topics=(topics.points,),
        group_id=config.group_id,
        service="trainer",
        delivery="exactly-once",
        transactional_id=config.transactional_id,
        mode="assign",
        max_batch=config.max_records,
        poll_timeout_s=config.poll_timeout_ms / 1000,
        retry_s=retry_s_from_env() if retry_s is None else retry_s,
        deadletter_topic=topics.deadletter,
        background_commit=True,
        finish_timeout_s=FINISH_TIMEOUT_S,
        producer_options={"linger_ms": 0},  # a publication is sent as soon as it is made
    )


class Trainer:
    """Fits the configured regressors on ``points`` and publishes them to ``models``.

    ``driver`` makes every Kafka client (`bus.clients.driver_for`, or the in-memory
    driver in tests). ``clock`` gives epoch seconds (``created_at`` and the
    publication interval); ``stop`` ends the loop after the current batch.
    ``run()`` blocks, so tests run it in a thread. With a ``model_key`` every
    version is signed (`bus.signing`). ``step`` and ``runner`` may be given instead
    of being made from the driver.
    """

    def __init__(
        self,
        driver: Driver,
        topics: Topics,
        config: TrainerConfig,
        *,
        clock: Callable[[], float] = time.time,
        stop: StopFlag | None = None,
        retry_s: float | None = None,
        model_key: ModelKey | None = None,
        step: TrainingStep | None = None,
        runner: StreamRunner | None = None,
    ) -> None:
        self._stop = stop or StopFlag()
        self._driver = driver
        self._group = (config.group_id, topics.points)
        self.step = step or TrainingStep(
            driver, topics, config, clock=clock, stop=self._stop, model_key=model_key
        )
        self.runner = runner or StreamRunner(
            driver, stream_config(topics, config, retry_s=retry_s), self.step, stop=self._stop
        )

    @property
    def versions(self) -> dict[str, int]:
        """The last version published (or recovered) per model name."""
        return self.step.versions

    @property
    def stats(self) -> TrainerStats:
        """What has been committed so far."""
        return self.step.stats

    def telemetry(
        self, config: TelemetryConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> tuple[CollectorRegistry, Health, Watch]:
        """Metrics and health of this trainer (the lag `Watch` not yet started)."""
        driver = self._driver
        group, topic = self._group
        watch = lag_watch(lambda g: driver.consumer(group_id=g), {group: topic}, clock=clock)
        runner = self.runner
        health = Health(
            stall_s=config.stall_s,
            progress=lambda: runner.stats.chunks + runner.stats.records + runner.stats.commits,
            backlog=lambda: watch.backlog(group),
            checks=[watch.problem],
            clock=clock,
        )
        registry = registry_of(
            BuildInfo("trainer"), TrainerMetrics(self), watch, HealthCollector("trainer", health)
        )
        return registry, health, watch

    def run(self) -> TrainerStats:
        """Train until the stop flag is set; publish what is pending; return the stats."""
        self.step.open()
        try:
            self.runner.run()
        finally:
            self.step.close()
        return self.stats


class TrainerMetrics(Collector):
    """The trainer's series, read from its state at each scrape."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer

    def collect(self) -> Iterator[Metric]:
        """Points, labelled points, versions published, dead letters, latest versions."""
        trainer = self._trainer
        stats, kernel = trainer.stats, trainer.runner.stats
        for name, text, value in (
            ("points_total", "points committed", stats.records),
            ("batches_total", "batches committed", kernel.batches),
            ("bus_faults_total", "transient bus faults ridden through", kernel.faults),
        ):
            family = CounterMetricFamily(PREFIX + name, text, labels=["service"])
            family.add_metric(["trainer"], value)
            yield family
        for name, text, value in (
            ("trainer_labelled_points_total", "labelled points learnt from", stats.labelled),
            ("versions_published_total", "model versions published", stats.versions),
            ("trainer_transactions_total", "transactions committed", stats.transactions),
        ):
            counter = CounterMetricFamily(PREFIX + name, text)
            counter.add_metric([], value)
            yield counter
        dead = CounterMetricFamily(
            PREFIX + "deadletters_total",
            "records sent to the dead-letter topic, by reason class",
            labels=["service", "reason"],
        )
        for reason, count in sorted(dict(kernel.reasons).items()):
            dead.add_metric(["trainer", reason], count)
        yield dead
        latest = GaugeMetricFamily(
            PREFIX + "model_version", "the latest version published, per model", labels=["model"]
        )
        for name, version in sorted(trainer.versions.items()):
            latest.add_metric([name], float(version))
        yield latest
