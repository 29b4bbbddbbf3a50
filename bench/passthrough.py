"""Pass-through: copy ``points`` record by record to another topic, committing like the scorer.

The ceiling for any Python scorer on kafka-python: the same clients, settings,
batches and commits as ``scorer.loop.Scorer`` (flush then commit for
at-least-once; one transaction per batch with the offsets for exactly-once), the
same partition choice (a record without a key goes to the partition of its own
number), and nothing else: no parsing, no model, no encoding.

Run as a process of its own, like the scorer: ``python -m bench.passthrough
SOURCE TARGET --group G [--exactly-once --transactional-id T]``; it stops on
SIGTERM after finishing its batch.
"""

from __future__ import annotations

import argparse
import logging
import sys

from kafka.structs import OffsetAndMetadata

from bus.clients import make_consumer, make_producer
from bus.settings import KafkaSettings
from scorer.config import ScorerConfig
from streamscore.logs import configure_logging
from streamscore.shutdown import StopFlag

log = logging.getLogger("passthrough")


def run(
    settings: KafkaSettings,
    source: str,
    target: str,
    *,
    group: str,
    transactional_id: str | None,
    stop: StopFlag,
) -> int:
    """Copy ``source`` to ``target`` until stopped; return how many records were copied."""
    config = ScorerConfig()
    consumer = make_consumer(
        settings,
        source,
        group_id=group,
        max_poll_records=config.max_batch,
        fetch_max_wait_ms=config.poll_timeout_ms,
    )
    if transactional_id:
        producer = make_producer(
            settings, transactional_id=transactional_id, transaction_timeout_ms=15_000
        )
        producer.init_transactions()
    else:
        producer = make_producer(settings)
    partitions = len(producer.partitions_for(target))
    copied = 0
    try:
        while not stop.is_set():
            polled = consumer.poll(timeout_ms=config.poll_timeout_ms)
            if not polled:
                continue
            if transactional_id:
                producer.begin_transaction()
            send = producer.send
            for records in polled.values():
                for record in records:
                    key = record.key
                    if key is None:
                        send(target, value=record.value, partition=record.partition % partitions)
                    else:
                        send(target, key=key, value=record.value)
                copied += len(records)
            offsets = {
                tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)
                for tp, records in polled.items()
                if records
            }
            if transactional_id:
                producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
                producer.commit_transaction()
            else:
                producer.flush()
                consumer.commit(offsets)
    finally:
        consumer.close()
        producer.close(timeout=10)
    return copied


def main(argv: list[str] | None = None) -> int:
    """Run the pass-through until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.passthrough", description=__doc__)
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--group", required=True)
    parser.add_argument("--transactional-id", help="exactly-once: one transaction per batch")
    args = parser.parse_args(argv)
    configure_logging("passthrough")
    copied = run(
        KafkaSettings.from_env(),
        args.source,
        args.target,
        group=args.group,
        transactional_id=args.transactional_id,
        stop=StopFlag().install(),
    )
    log.info("stopped after copying %d records", copied)
    return 0


if __name__ == "__main__":
    sys.exit(main())
