"""How a `bus.stream.StreamRunner` makes its clients, places its partitions and meets rebalances.

`Clients` makes the producer (holding the transactional id in exactly-once
mode) and the consumer, subscribes or assigns (watching for new partitions in
assign mode), settles the uncommitted work of revoked partitions, and closes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bus.clients.base import Producer, TopicPartition
from bus.deadletter import DeadLetters
from bus.partitions import topic_partitions
from bus.stream_state import RunState, close_quietly, names
from core.errors import BusError

log = logging.getLogger("bus.stream")  # the runner's log


class Clients:
    """The clients of one run (its state: ``state``)."""

    def __init__(self, state: RunState) -> None:
        self._state = state

    def connect(self) -> None:
        """Make the producer and the consumer, and start reading (one attempt)."""
        state = self._state
        config = state.config
        state.producer = self.new_producer()
        state.doing = "consumer"
        options: dict[str, Any] = {
            "group_id": config.group_id,
            "max_poll_records": config.max_batch,
        }
        if config.group_instance_id:
            options["group_instance_id"] = config.group_instance_id
        consumer = state.consumer = state.driver.consumer(**{**options, **config.consumer_options})
        state.doing = "partitions_for"
        partitions = topic_partitions(
            consumer, list(config.topics), config.topic_wait_s, stop=state.stop
        )
        if config.mode == "subscribe":
            state.doing = "subscribe"
            consumer.subscribe(
                list(config.topics), on_assign=self.on_assign, on_revoke=self.on_revoke
            )
        else:
            self.assign(partitions, partitions)

    def new_producer(self) -> Producer:
        """A producer; in exactly-once mode holding the transactional id (fencing older ones)."""
        state = self._state
        config = state.config
        state.doing = "producer"
        options = dict(config.producer_options)
        if config.exactly_once:
            options["transactional_id"] = config.transactional_id
        producer = state.driver.producer(**options)
        if config.exactly_once:
            state.doing = "init_transactions"
            try:
                state.blocking(producer.init_transactions)
            except BusError:
                close_quietly(producer)
                raise
        if state.deadletters is None:
            state.deadletters = DeadLetters(
                producer,
                config.deadletter_topic,
                config.service,
                max_bytes=config.max_record_bytes,
            )
        state.deadletters.producer = producer
        return producer

    # --- assign mode -------------------------------------------------------------------

    def assign(self, partitions: list[TopicPartition], new: list[TopicPartition]) -> None:
        """Assign mode: read ``partitions``; place ``new`` ones where the step says."""
        state = self._state
        consumer = state.consumer
        assert consumer is not None
        # where each partition already read continues: the next offset read, or the last commit
        resume = {tp: state.pending.get(tp, state.origin.get(tp, -1)) for tp in partitions}
        state.doing = "assign"
        consumer.assign(partitions)
        placed = dict(state.step.start(new)) if new else {}
        state.doing = "seek"
        for tp in partitions:
            if tp in placed:
                offset = state.origin[tp] = placed[tp]
            elif tp in new:
                continue  # the group's committed offset, or the beginning
            else:
                offset = resume[tp]
                if offset == -1:
                    continue
            if offset is None:
                consumer.seek_to_beginning([tp])
            else:
                consumer.seek(tp, offset)
        state.next_partition_check = state.clock() + state.config.partition_check_s

    def watch_partitions(self) -> None:
        """Assign mode: also read partitions added to the topics since the last check."""
        state = self._state
        consumer = state.consumer
        assert consumer is not None
        state.doing = "partitions_for"
        found = [
            TopicPartition(topic, p)
            for topic in state.config.topics
            for p in consumer.partitions_for(topic)
        ]
        known = consumer.assignment()
        new = [tp for tp in found if tp not in known]
        if new:
            log.info(
                "%s: new partitions %s: reading them too",
                state.config.service,
                ", ".join(f"{tp.topic}[{tp.partition}]" for tp in new),
            )
            self.assign(sorted(known | set(new)), new)
        state.next_partition_check = state.clock() + state.config.partition_check_s

    # --- subscribe mode ----------------------------------------------------------------

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        """Subscribe mode: newly assigned partitions start at the group's committed offsets."""
        state = self._state
        for tp in partitions:
            state.origin.pop(tp, None)
        log.info("%s: assigned %s", state.config.service, names(partitions))

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Subscribe mode: settle the uncommitted work before these partitions go."""
        if not partitions:  # some clients report the first join as an empty revoke
            return
        state = self._state
        revoked = set(partitions)
        log.info("%s: revoked %s", state.config.service, names(partitions))
        lost = {tp: o for tp, o in state.pending.items() if tp in revoked}
        if state.eos:
            # KIP-447: a commit of this generation would be refused; redo what is open
            if state.pending or state.in_txn:
                state.dirty = True
        elif lost:
            self._commit_revoked(lost)
        for tp in revoked:
            state.pending.pop(tp, None)
            state.origin.pop(tp, None)
            state.unsynced.pop(tp, None)
        try:
            state.step.revoked(partitions)
        except Exception:
            log.exception("%s: the step's revoked() failed", state.config.service)

    def _commit_revoked(self, lost: dict[TopicPartition, int]) -> None:
        """At-least-once: flush, then commit the offsets of the revoked partitions."""
        state = self._state
        try:
            if state.written:
                assert state.producer is not None
                state.producer.flush()
                state.written = False
            assert state.consumer is not None
            state.consumer.commit(lost)
        except BusError as exc:
            log.warning(
                "%s: could not commit the work of the revoked partitions (%s): "
                "their new owner reads it again",
                state.config.service,
                exc,
            )
            state.dirty = True

    # --- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the consumer (leaving the group), then the producer.

        After a stop, the producer gets what is left of ``finish_timeout_s`` to
        deliver what it holds.
        """
        state = self._state
        consumer, state.consumer = state.consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except BusError as exc:
                log.debug("closing the consumer: %s", exc)
        producer, state.producer = state.producer, None
        if producer is not None:
            timeout = state.config.finish_timeout_s
            if state.deadline is not None:
                timeout = max(0.0, state.deadline - time.monotonic())
            close_quietly(producer, timeout)
