"""How a `bus.stream.StreamRunner` meets bus faults: back off, redo from the last commit, or stop.

`Faults` counts transient faults against the retry budget (a warning per fault,
an INFO on recovery), and recovers: aborts the open transaction (replacing a
producer that cannot abort), seeks every partition read since the last commit
back to where that commit left it, and tells the step. `fenced_error` says who
took over when this instance is fenced.
"""

from __future__ import annotations

import logging

from bus.clients.base import FencedError, TransientBusError
from bus.stream_clients import Clients
from bus.stream_commit import Committer
from bus.stream_state import RunState, close_quietly
from bus.stream_types import RETRY_ENV, StreamConfig
from core.errors import BusError

log = logging.getLogger("bus.stream")  # the runner's log


class Faults:
    """Fault handling of one run (its state: ``state``)."""

    def __init__(self, state: RunState, committer: Committer, clients: Clients) -> None:
        self._state = state
        self._committer = committer
        self._clients = clients

    def fault(self, exc: TransientBusError) -> None:
        """Count a transient fault; back off, or give up once the retry budget is spent."""
        state = self._state
        config = state.config
        now = state.clock()
        state.stats.faults += 1
        if state.fault_since is None:
            state.fault_since = now
        failing = now - state.fault_since
        if failing >= config.retry_s:
            raise BusError(
                f"{config.service}: Kafka calls have failed for {failing:.0f}s without a "
                f"successful round (last: {state.doing} failed: {exc}). Check that the brokers "
                "(KAFKA_BOOTSTRAP_SERVERS) are up and reachable, that the topics exist and "
                f"that the client settings are right; {RETRY_ENV} sets how long to retry"
            ) from exc
        log.warning(
            "%s: %s failed (%s): redoing the uncommitted work from the last commit "
            "in %.1fs (retrying for %.0fs more)",
            config.service,
            state.doing,
            exc,
            state.backoff,
            config.retry_s - failing,
        )
        state.stop.wait(state.backoff)
        state.backoff = min(state.backoff * 2, config.backoff_max_s)

    def progressed(self) -> None:
        """A round went through: note it, and end a run of faults."""
        state = self._state
        now = state.clock()
        state.stats.last_progress = now
        if state.fault_since is not None:
            log.info(
                "%s: recovered after %.1f s (%d faults so far)",
                state.config.service,
                now - state.fault_since,
                state.stats.faults,
            )
            state.fault_since = None
            state.backoff = state.config.backoff_s

    def recover(self) -> None:
        """Drop the uncommitted work: abort the transaction, seek back, tell the step.

        A background commit in flight is waited for first (while the stop flag is
        not set: stopped, this returns with the work still to recover).
        """
        state = self._state
        if state.flight is not None:
            while not state.flight.finished.wait(0.05):
                if state.stop.is_set():
                    return
            try:
                self._committer.land(resume=False)
            except TransientBusError as exc:  # its work is redone with the rest
                log.debug("%s: the background commit failed too: %s", state.config.service, exc)
        state.held = []
        state.commit_wanted = False
        self._abort()
        if state.pending:
            self._rewind()
        state.drop_work()
        state.dirty = False
        state.stats.rewinds += 1
        state.step.rewind()

    def _rewind(self) -> None:
        """Seek each partition read since the last commit back to where that commit left it."""
        state = self._state
        consumer = state.consumer
        assert consumer is not None
        pending = state.pending
        unknown = [tp for tp in pending if tp not in state.origin]
        if unknown:
            state.doing = "committed"
            state.origin.update(consumer.committed(unknown))
        state.doing = "seek"
        assigned = consumer.assignment()
        for tp in pending:
            if tp not in assigned:
                continue
            origin = state.origin.get(tp)
            if origin is None:
                consumer.seek_to_beginning([tp])
            else:
                consumer.seek(tp, origin)

    def _abort(self) -> None:
        """Abort the open transaction; a producer that cannot abort is replaced."""
        state = self._state
        if state.producer is None:
            state.producer = self._clients.new_producer()
        if not state.in_txn:
            return
        state.in_txn = False
        state.doing = "abort_transaction"
        try:
            state.blocking(state.producer.abort_transaction)
            state.stats.aborts += 1
        except FencedError:
            raise
        except BusError as exc:
            log.warning(
                "%s: aborting the transaction failed (%s): starting a new producer",
                state.config.service,
                exc,
            )
            old, state.producer = state.producer, None
            close_quietly(old)
            state.producer = self._clients.new_producer()


def fenced_error(config: StreamConfig, exc: FencedError) -> BusError:
    """The error a fenced instance stops with: who took over, and what to do."""
    if config.exactly_once:
        return BusError(
            f"{config.service}: another instance with transactional id "
            f"{config.transactional_id!r} took over and fenced this one, which stops "
            f"({exc}). Run one instance per transactional id: give each copy its own, "
            "or stop the other"
        )
    return BusError(
        f"{config.service}: another member with static member id "
        f"{config.group_instance_id!r} took over in group {config.group_id!r}, and this "
        f"one stops ({exc}). Give each copy its own static member id"
    )
