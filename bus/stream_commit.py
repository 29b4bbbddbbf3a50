"""How a `bus.stream.StreamRunner` writes outcomes and commits them, now or in the background.

`Committer` sends an outcome's outputs and dead letters (in exactly-once mode
inside the open transaction), commits everything since the last commit with its
offsets, and, with ``background_commit``, runs the commit on a thread of its own
(`Flight`) while the loop goes on, holding the outcomes that come meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from itertools import repeat

from bus.clients.base import Producer, TopicPartition
from bus.stream_state import RunState, StoppedError
from bus.stream_types import Outcome, StreamStats
from core.errors import BusError
from core.telemetry import reason_class

log = logging.getLogger("bus.stream")  # the runner's log


class Flight:
    """A transaction committing on a thread of its own, and the work it covers."""

    def __init__(
        self,
        offsets: dict[TopicPartition, int],
        durable: bool,
        tally: StreamStats,
        done: list[Outcome],
    ) -> None:
        self.offsets = offsets
        self.durable = durable
        self.tally = tally
        self.done = done
        self.error: BusError | None = None
        self.doing = "send_offsets_to_transaction"
        self.finished = threading.Event()

    def start(self, producer: Producer, group: object, name: str) -> None:
        """Send the offsets to the transaction and commit it, on a daemon thread."""
        thread = threading.Thread(target=self._fly, args=(producer, group), name=name, daemon=True)
        thread.start()

    def _fly(self, producer: Producer, group: object) -> None:
        try:
            if self.offsets:
                producer.send_offsets_to_transaction(self.offsets, group)
            self.doing = "commit_transaction"
            producer.commit_transaction()
        except BusError as exc:
            self.error = exc
        except Exception as exc:  # a client's bug: the loop stops with it, not this thread
            self.error = BusError(f"committing the transaction failed unexpectedly: {exc!r}")
            self.error.__cause__ = exc
        finally:
            self.finished.set()


class Committer:
    """Writes outcomes and commits them for one run (its state: ``state``)."""

    def __init__(self, state: RunState) -> None:
        self._state = state

    # --- writing -----------------------------------------------------------------------

    def write(self, outcome: Outcome) -> None:
        """Send ``outcome``'s outputs and dead letters (opening a transaction if needed).

        While a background commit is in flight the outcome is held, to be written
        once it is done.
        """
        state = self._state
        if state.flight is not None:
            state.held.append(outcome)
            return
        state.done.append(outcome)
        if not outcome.outputs and not outcome.deadletters:
            return
        producer, deadletters = state.producer, state.deadletters
        assert producer is not None and deadletters is not None
        if state.eos and not state.in_txn:
            state.doing = "begin_transaction"
            producer.begin_transaction()
            state.in_txn = True
        state.written = True
        state.doing = "send"
        sent = _send_outputs(producer, outcome)
        for record, reason in outcome.deadletters:
            deadletters.send(record, reason)
        state.tally.outputs += sent
        if outcome.deadletters:
            state.tally.deadletters += len(outcome.deadletters)
            state.tally.reasons.update(reason_class(reason) for _, reason in outcome.deadletters)

    # --- committing --------------------------------------------------------------------

    def commit(self) -> None:
        """Make everything since the last commit durable, with its offsets; tell the step."""
        state = self._state
        producer, consumer = state.producer, state.consumer
        assert producer is not None and consumer is not None
        if state.flight is not None:  # one at a time: this one starts once that one is done
            state.commit_wanted = True
            return
        offsets = state.pending
        durable = bool(offsets or state.written)
        if state.eos:
            if offsets or state.in_txn:
                if not state.in_txn:
                    state.doing = "begin_transaction"
                    producer.begin_transaction()
                    state.in_txn = True
                if state.config.background_commit:
                    self._launch(offsets, durable)
                    return
                if offsets:
                    state.doing = "send_offsets_to_transaction"
                    producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
                state.doing = "commit_transaction"
                producer.commit_transaction()
                state.in_txn = False
        else:
            if state.written:
                state.doing = "flush"
                producer.flush()
            if offsets:
                # the outputs are acknowledged: commit without waiting for the answer
                # (the last offsets are committed synchronously at revoke and at stop)
                state.doing = "commit"
                consumer.commit(offsets, asynchronous=True)
                state.unsynced.update(offsets)
        state.pending = {}
        state.written = False
        tally, state.tally = state.tally, StreamStats()
        done, state.done = state.done, []
        self._settled(offsets, durable, tally, done)

    def _settled(
        self,
        offsets: dict[TopicPartition, int],
        durable: bool,
        tally: StreamStats,
        done: list[Outcome],
    ) -> None:
        """A commit went through: note where it left the partitions, count it, tell the step."""
        state = self._state
        state.origin.update(offsets)
        if durable:
            state.stats.commits += 1
        state.stats.add(tally)
        for outcome in done:
            state.step.committed(outcome)

    # --- background commits ------------------------------------------------------------

    def _launch(self, offsets: dict[TopicPartition, int], durable: bool) -> None:
        """Commit the open transaction, with ``offsets``, on a thread of its own.

        The work it covers leaves ``done`` and ``tally``; ``pending`` keeps its
        offsets until it is done (a failure redoes everything since the last commit).
        """
        state = self._state
        consumer = state.consumer
        assert consumer is not None and state.producer is not None
        state.doing = "group_metadata"
        group = consumer.group_metadata() if offsets else None
        flight = Flight(dict(offsets), durable, state.tally, state.done)
        state.tally, state.done, state.written = StreamStats(), [], False
        state.flight = flight
        flight.start(state.producer, group, f"{state.config.service}-commit")

    def land(self, wait_s: float = 0.0, *, resume: bool = True) -> bool:
        """Settle the background commit if it is done (waiting up to ``wait_s``).

        Returns False while it is still in flight. Raises its error if it failed
        (the transaction stays open, to be aborted). ``resume``: then write the
        outcomes held meanwhile, and start the commit asked for meanwhile.
        """
        state = self._state
        flight = state.flight
        if flight is None:
            return True
        if not flight.finished.wait(wait_s):
            return False
        state.flight = None
        if flight.error is not None:
            state.doing = flight.doing
            raise flight.error
        state.in_txn = False
        pending = state.pending
        for tp, offset in flight.offsets.items():
            if pending.get(tp) == offset:
                del pending[tp]
        self._settled(flight.offsets, flight.durable, flight.tally, flight.done)
        if resume:
            held, state.held = state.held, []
            for outcome in held:
                self.write(outcome)
            if state.commit_wanted:
                state.commit_wanted = False
                self.commit()
        return True

    # --- at stop -----------------------------------------------------------------------

    def settle(self, deadline: float) -> bool:
        """Stop: land background commits until none is left (True), or ``deadline`` passes."""
        state = self._state
        while state.flight is not None:
            if not self.land(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "%s: a commit is still in flight after %.0fs: stopping without it; "
                    "if it does not complete, what it held is read again at the next start",
                    state.config.service,
                    state.config.finish_timeout_s,
                )
                return False
        state.commit_wanted = False  # the last commit covers it
        return True

    def sync_offsets(self) -> None:
        """Stop: commit synchronously the offsets committed asynchronously since the last sync."""
        state = self._state
        if state.unsynced and state.consumer is not None:
            owned = state.consumer.assignment()
            offsets = {tp: o for tp, o in state.unsynced.items() if tp in owned}
            if offsets:
                state.doing = "commit"
                state.consumer.commit(offsets)
            state.unsynced = {}

    def drop_open_transaction(self, deadline: float) -> None:
        """Stop: abort the open transaction, waiting until ``deadline`` at most."""
        state = self._state
        if state.flight is not None:  # still committing: leave it to Kafka
            return
        if state.in_txn and state.producer is not None:
            state.in_txn = False
            try:
                state.blocking(state.producer.abort_transaction, deadline)
                state.stats.aborts += 1
            except StoppedError:
                log.warning(
                    "%s: aborting the open transaction takes over %.0fs: stopping without "
                    "waiting (Kafka aborts it when it times out, or at the next start)",
                    state.config.service,
                    state.config.finish_timeout_s,
                )
            except BusError as exc:
                log.debug("aborting on stop: %s", exc)


def _send_outputs(producer: Producer, outcome: Outcome) -> int:
    """Send ``outcome``'s outputs, column by column; how many records were sent."""
    sent = 0
    send = producer.send
    for output in outcome.outputs:
        topic, values, keys = output.topic, output.values, output.keys
        if output.partitions is None and output.headers is None:
            if keys is None:
                for value in values:
                    send(topic, value)
            else:
                for value, key in zip(values, keys, strict=True):
                    send(topic, value, key=key)
        else:
            n = len(values)
            for value, key, partition, headers in zip(
                values,
                keys or repeat(None, n),
                output.partitions or repeat(None, n),
                output.headers or repeat(None, n),
                strict=True,
            ):
                send(topic, value, key=key, partition=partition, headers=headers)
        sent += len(values)
    return sent
