"""``streamscore producer``: publish points from a source to the ``points`` topic.

The source is the dummy function (points around a known function, with noise) or,
with ``--file``, a CSV or JSON-lines file to replay. Every flag can also be set by
an environment variable ``STREAMSCORE_PRODUCER_<FLAG>``; flags win.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TextIO

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from bus.clients import driver_for
from bus.messages import Point
from bus.settings import KafkaSettings
from bus.topics import TopicLayout, Topics, ensure_topics
from core.errors import ConfigError, StreamscoreError
from core.logs import configure_logging
from core.shutdown import StopFlag
from core.telemetry import (
    PREFIX,
    BuildInfo,
    Health,
    HealthCollector,
    TelemetryConfig,
    Watch,
    registry_of,
    serve,
)
from producer.config import SETTINGS, ProducerConfig
from producer.loop import PublishSummary, publish
from producer.progress import ProgressReporter
from producer.sources import BadRows, DummySource, Source, drop_labels, open_file_source

log = logging.getLogger(__name__)

#: Bad rows listed in the summary (all are counted).
SHOW_BAD_ROWS = 10
#: How often the bar on a terminal is redrawn, in seconds.
BAR_INTERVAL = 0.2


EPILOG = (
    "Kafka: KAFKA_BOOTSTRAP_SERVERS (and KAFKA_*); client library: STREAMSCORE_KAFKA_CLIENT "
    "(kafka-python or confluent); topic: STREAMSCORE_TOPIC_PREFIX or STREAMSCORE_TOPIC_POINTS. "
    "Ctrl-C stops cleanly: flush, summary, exit 0."
)


def build_parser() -> argparse.ArgumentParser:
    """The command line: one flag per setting of `producer.config.SETTINGS`."""
    return SETTINGS.parser("streamscore producer", __doc__, EPILOG)


def parse_config(argv: list[str], env: Mapping[str, str] | None = None) -> ProducerConfig:
    """The configuration: ``STREAMSCORE_PRODUCER_*`` variables, then flags on top."""
    return SETTINGS.parse_args(build_parser(), argv, env)


def build_source(config: ProducerConfig, id_prefix: str) -> tuple[Iterable[Point], BadRows]:
    """The points to publish and where the source records its bad rows."""
    if not config.file:
        dummy = DummySource(
            config.function,
            config.features,
            noise=config.noise,
            seed=config.seed,
            unlabelled=config.unlabelled,
            drift_after=config.drift_after or None,
            id_prefix=id_prefix,
        )
        return dummy, dummy.bad
    source: Source = open_file_source(
        config.file,
        fmt=config.format,
        columns=config.columns or None,
        label_column=config.label_column,
        delimiter=config.delimiter or None,
        id_prefix=id_prefix,
    )
    return drop_labels(source, config.unlabelled, config.seed), source.bad


def describe(config: ProducerConfig, topic: str, id_prefix: str) -> str:
    """One line saying what this run publishes."""
    if config.file:
        what = f"file {config.file}"
    else:
        drift = f", drift after {config.drift_after:,}" if config.drift_after else ""
        what = (
            f"dummy {config.function} function of {config.features} feature(s), "
            f"noise {config.noise}, seed {config.seed}{drift}"
        )
    count = f"{config.count:,} points" if config.count else "points"
    rate = f" at {config.rate:,.0f}/s" if config.rate else ""
    return f"publishing {count} from {what} to {topic!r}{rate}, ids {id_prefix}000000..."


def format_summary(summary: PublishSummary, bad: BadRows, topic: str) -> str:
    """The final report: sent, unlabelled, rate, and the first bad rows skipped."""
    lines = [
        f"sent {summary.sent:,} points to {topic!r} in {summary.elapsed:.2f} s "
        f"({summary.rate:,.0f} points/s); {summary.labelled:,} labelled, "
        f"{summary.unlabelled:,} unlabelled"
    ]
    if bad.count:
        lines.append(f"skipped {bad.count:,} bad row(s) of {bad.source}:")
        lines += [f"  {row}" for row in bad.first[:SHOW_BAD_ROWS]]
        if bad.count > SHOW_BAD_ROWS:
            lines.append(f"  ... and {bad.count - SHOW_BAD_ROWS:,} more")
    if summary.failed:
        lines.append(
            f"{summary.failed:,} point(s) sent after the last acknowledgement may not have "
            "been delivered"
        )
    if summary.error:
        lines.append(f"error: {summary.error}")
    if summary.stopped:
        lines.append("stopped on request (signal)")
    return "\n".join(lines)


def run(
    config: ProducerConfig,
    settings: KafkaSettings,
    topics: Topics,
    layout: TopicLayout,
    *,
    stop: StopFlag,
    out: TextIO,
    err: TextIO,
) -> int:
    """Create missing topics, publish, print the summary; the exit code."""
    id_prefix = config.id_prefix_for_run()
    points, bad = build_source(config, id_prefix)
    ensure_topics(settings, topics, layout)
    producer = driver_for(settings).producer(**config.producer_overrides())
    log.info("%s", describe(config, topics.points, id_prefix))
    tty = err.isatty()
    reporter = ProgressReporter(
        err,
        total=config.count or None,
        tty=tty,
        interval=BAR_INTERVAL if tty else config.progress_interval,
    )
    telemetry = TelemetryConfig.for_service("producer", os.environ)
    # a stall is judged only when points are due more often than twice per stall_s
    rate = config.rate
    sent = SentPoints(reporter, busy=lambda: rate == 0 or rate * telemetry.stall_s >= 2)
    registry, health, watch = producer_telemetry(settings, topics.points, sent, telemetry)
    server = serve(telemetry, registry, health)
    watch.start()
    try:
        summary = publish(
            points,
            producer,
            topics.points,
            count=config.count or None,
            rate=config.rate or None,
            keys=config.key_fn(),
            stamp=not config.keep_ts,
            stop=stop,
            progress=sent,
        )
    finally:
        sent.done = True
        reporter.finish()
        producer.close(10.0)
        watch.close()
        if server is not None:
            server.close()
    print(format_summary(summary, bad, topics.points), file=out, flush=True)
    return 1 if summary.error else 0


class SentPoints(Collector):
    """The send loop's progress callback: counts the points sent, then tells ``then``."""

    def __init__(self, then: Callable[[int, float], None], *, busy: Callable[[], bool]) -> None:
        self._then = then
        self._busy = busy
        self._lock = threading.Lock()
        self.sent = 0
        self.done = False

    def __call__(self, sent: int, elapsed: float) -> None:
        with self._lock:
            self.sent = sent
        self._then(sent, elapsed)

    def backlog(self) -> int:
        """1 while points are still to be sent fast enough to judge a stall, else 0."""
        return 0 if self.done or not self._busy() else 1

    def collect(self) -> Iterator[Metric]:
        """``streamscore_points_total{service="producer"}``."""
        family = CounterMetricFamily(
            PREFIX + "points_total", "points sent (queued to the producer)", labels=["service"]
        )
        with self._lock:
            family.add_metric(["producer"], self.sent)
        yield family


def producer_telemetry(
    settings: KafkaSettings,
    topic: str,
    sent: SentPoints,
    config: TelemetryConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[CollectorRegistry, Health, Watch]:
    """Metrics and health of the producer; ready while the brokers answer for ``topic``."""
    driver = driver_for(settings)
    consumers: list[Any] = []

    def read() -> dict[tuple[str, str, int], int]:
        if not consumers:
            consumers.append(driver.consumer(group_id=None))
        if not consumers[0].partitions_for(topic):
            raise ConfigError(f"topic {topic!r} does not exist")
        return {}

    def close() -> None:
        while consumers:
            consumers.pop().close()

    watch = Watch(read, clock=clock, close=close)
    health = Health(
        stall_s=config.stall_s,
        progress=lambda: sent.sent,
        backlog=sent.backlog,
        checks=[watch.problem],
        clock=clock,
    )
    registry = registry_of(BuildInfo("producer"), sent, HealthCollector("producer", health))
    return registry, health, watch


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 when done or stopped by a signal, 1 on a bus error, 2 on bad settings."""
    args = sys.argv[1:] if argv is None else argv
    configure_logging("producer")
    try:
        config = parse_config(args)
        settings = KafkaSettings.from_env()
        topics = Topics.from_env()
        layout = TopicLayout.from_env()
    except ConfigError as exc:
        print(f"streamscore producer: {exc}", file=sys.stderr)
        return 2
    stop = StopFlag().install()
    try:
        return run(config, settings, topics, layout, stop=stop, out=sys.stdout, err=sys.stderr)
    except ConfigError as exc:
        print(f"streamscore producer: {exc}", file=sys.stderr)
        return 2
    except StreamscoreError as exc:
        print(f"streamscore producer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("streamscore producer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
