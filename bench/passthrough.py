"""Pass-through: the stream kernel copying ``points`` to another topic, on either Kafka client.

The ceiling for any step the kernel runs: `bus.stream.StreamRunner` with an
identity step, on the driver ``STREAMSCORE_KAFKA_CLIENT`` names, with the
scorer's batch size, poll timeout and delivery (poll, send, flush, commit), and
its partition choice (a record without a key goes to the partition of its own
number, modulo the target's partitions). No parsing, no model, no encoding.

Run as a process of its own, like the scorer: ``python -m bench.passthrough
SOURCE TARGET --group G [--transactional-id T]`` (with a transactional id:
exactly-once); it stops on SIGTERM after finishing its batch.
"""

from __future__ import annotations

import argparse
import logging
import sys

from bus.clients import driver_for
from bus.clients.base import Record
from bus.settings import KafkaSettings
from bus.stream import Outcome, Step, StreamConfig, StreamRunner, StreamStats
from core.logs import configure_logging
from core.shutdown import StopFlag
from scorer.config import ScorerConfig

log = logging.getLogger("passthrough")


class Identity(Step):
    """Writes every record's key and value, unchanged, to ``target``."""

    def __init__(self, target: str, partitions: int) -> None:
        self._target = target
        self._partitions = partitions

    def process(self, records: list[Record]) -> Outcome:
        """One output per record: same key and value; key-less ones by their partition."""
        partitions = self._partitions
        return Outcome().add(
            self._target,
            [r.value for r in records],
            [r.key for r in records],
            [None if r.key is not None else r.partition % partitions for r in records],
        )


def stream_config(source: str, group: str, transactional_id: str | None) -> StreamConfig:
    """The kernel's configuration: the scorer's batch, poll timeout and delivery."""
    scorer = ScorerConfig()
    return StreamConfig(
        topics=(source,),
        group_id=group,
        service="passthrough",
        delivery="exactly-once" if transactional_id else "at-least-once",
        transactional_id=transactional_id,
        max_batch=scorer.max_batch,
        poll_timeout_s=scorer.poll_timeout_ms / 1000,
    )


def run(
    settings: KafkaSettings,
    source: str,
    target: str,
    *,
    group: str,
    transactional_id: str | None,
    stop: StopFlag,
) -> StreamStats:
    """Copy ``source`` to ``target`` until stopped; what the kernel committed."""
    driver = driver_for(settings)
    probe = driver.producer()
    try:
        partitions = probe.partition_count(target)
    finally:
        probe.close()
    step = Identity(target, partitions)
    config = stream_config(source, group, transactional_id)
    return StreamRunner(driver, config, step, stop=stop).run()


def main(argv: list[str] | None = None) -> int:
    """Run the pass-through until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.passthrough", description=__doc__)
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--group", required=True)
    parser.add_argument("--transactional-id", help="exactly-once: one transaction per batch")
    args = parser.parse_args(argv)
    configure_logging("passthrough")
    settings = KafkaSettings.from_env()
    stats = run(
        settings,
        args.source,
        args.target,
        group=args.group,
        transactional_id=args.transactional_id,
        stop=StopFlag().install(),
    )
    log.info("stopped after copying %d records (%s)", stats.records, settings.client)
    return 0


if __name__ == "__main__":
    sys.exit(main())
