"""The consume -> process -> produce -> commit loop every service runs, with its failure handling.

A service is a *step*: given a batch of records (or of `Chunk` columns), it says
what to write (`Outcome`: columnar outputs, dead letters, whether to commit).
`StreamRunner` owns the clients and the loop: it polls, calls the step, sends
the outputs and dead letters, and commits, in one of two delivery modes:

- ``at-least-once``: flush the producer (a failed delivery raises), then commit
  the offsets (asynchronously in the loop; synchronously on revoke and at stop);
- ``exactly-once``: outputs, dead letters and offsets in one transaction
  (`send_offsets_to_transaction` with the consumer's group metadata, KIP-447).

Failures are handled here, once:

- *record error*: the step raised (anything but a `BusError`) for a batch: the
  batch is redone one record at a time; a record whose own `process` raises goes
  to the dead-letter topic with the reason ``"<ExceptionType>: <message>"``, the
  others proceed. So does a record whose outputs are over ``max_record_bytes``.
- *transient bus error* (`TransientBusError` from any client call): abort the
  open transaction (when the abort fails too, replace the producer), seek every
  partition read since the last commit back to where that commit left it, tell
  the step (`rewind`), back off and redo. A warning per fault, an INFO on
  recovery; after ``retry_s`` of faults without a completed round, `BusError`.
- *fenced* (`FencedError`): stop with a `BusError` that says who took over.
- *rebalance*: work of revoked partitions is committed at once (at-least-once)
  or redone (exactly-once: uncommitted work of a lost generation is aborted).
- *stop flag*: finish the batch in hand, flush, commit, close.

With ``background_commit`` (exactly-once only) a transaction commits on a thread
of its own while the step goes on with the next batches: at most one is in
flight; outcomes that come meanwhile are held (their outputs unsent) until it is
done, then written into the next transaction; a commit asked for meanwhile starts
once it is done. A failed background commit is a fault like any other (all work
since the last commit that went through is redone). At stop, the last commits
are waited for ``finish_timeout_s`` at most; one still in flight then is left to
Kafka (it commits, or is aborted when the transactional id is next used) and the
work it held is read again at the next start.

The loop does no per-record Python work beyond sending outputs and noting the
last offset of each partition (one dict comprehension, ~35 ns a record).

A step, and how a service runs it::

    class Upper(Step):
        def process(self, records: list[Record]) -> Outcome:
            return Outcome().add("out", [(r.value or b"").upper() for r in records])

    config = StreamConfig(topics=("in",), group_id="upper", service="upper")
    StreamRunner(driver_for(settings), config, Upper(), stop=stop).run()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from bus.clients.base import (
    Chunk,
    Driver,
    FencedError,
    Record,
    RecordTooLargeError,
    TopicPartition,
    TransientBusError,
)
from bus.stream_clients import Clients
from bus.stream_commit import Committer
from bus.stream_faults import Faults, fenced_error
from bus.stream_state import RunState, StoppedError
from bus.stream_types import (
    DEFAULT_RETRY_S,
    DELIVERIES,
    MODES,
    RETRY_ENV,
    ChunkStep,
    Outcome,
    Output,
    Step,
    StepHooks,
    StreamConfig,
    StreamStats,
    retry_s_from_env,
)
from core.errors import BusError
from core.shutdown import StopFlag

log = logging.getLogger(__name__)


__all__ = [
    "DEFAULT_RETRY_S",
    "DELIVERIES",
    "MODES",
    "RETRY_ENV",
    "ChunkStep",
    "Outcome",
    "Output",
    "Step",
    "StepHooks",
    "StreamConfig",
    "StreamRunner",
    "StreamStats",
    "retry_s_from_env",
]


class StreamRunner:
    """Runs one step over its input topics until the stop flag is set.

    ``driver`` makes the clients (a new producer replaces one left in a fatal
    state); ``clock`` (seconds, monotonic) times the retry budget and the checks
    for new partitions. Its parts share one `RunState`: the commits
    (`bus.stream_commit`), the clients (`bus.stream_clients`) and the faults
    (`bus.stream_faults`).
    """

    def __init__(
        self,
        driver: Driver,
        config: StreamConfig,
        step: Step | ChunkStep,
        *,
        stop: StopFlag | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        state = self._state = RunState(driver, config, step, stop or StopFlag(), clock)
        self._config = config
        self._step = step
        self._columnar = state.columnar
        self._stop = state.stop
        self.stats = state.stats
        self._committer = Committer(state)
        self._clients = Clients(state)
        self._faults = Faults(state, self._committer, self._clients)

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> StreamStats:
        """Process until stopped; then finish the batch in hand, commit and close."""
        config = self._config
        try:
            if not self._open():
                return self.stats
            log.info(
                "%s: reading %s (%s, %s, group %r)",
                config.service,
                ", ".join(config.topics),
                config.delivery,
                config.mode,
                config.group_id,
            )
            while not self._stop.is_set():
                self._guarded(self._round)
            self._finish()
        finally:
            self._clients.close()
        stats = self.stats
        log.info(
            "%s: stopped after %d records in %d batches: %d outputs, %d dead letters, "
            "%d commits, %d faults, %d rewinds, %d aborts",
            config.service,
            stats.records or stats.chunks,
            stats.batches,
            stats.outputs,
            stats.deadletters,
            stats.commits,
            stats.faults,
            stats.rewinds,
            stats.aborts,
        )
        return stats

    def _open(self) -> bool:
        """Make the clients and start reading (False: stopped first); retries transient faults."""
        while True:
            try:
                self._clients.connect()
                self._faults.progressed()
                return not self._stop.is_set()
            except StoppedError:
                self._clients.close()
                return False
            except FencedError as exc:
                raise fenced_error(self._config, exc) from exc
            except TransientBusError as exc:
                self._clients.close()
                self._faults.fault(exc)
                if self._stop.is_set():
                    return False

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run ``action`` (after redoing lost work); turn bus faults into retries or a stop."""
        state = self._state
        try:
            if state.dirty:
                self._faults.recover()
                if state.dirty:  # stopped while a background commit was in flight
                    return
            action()
        except StoppedError:  # a blocking call is left to finish alone: the stop goes on
            return
        except FencedError as exc:
            raise fenced_error(self._config, exc) from exc
        except TransientBusError as exc:
            state.dirty = True
            self._faults.fault(exc)
        except RecordTooLargeError as exc:
            raise BusError(
                f"{self._config.service}: the producer refused a record as too large ({exc}); "
                "outputs are checked against max_record_bytes, which must stay below the "
                "producer's max_request_size and the broker's message.max.bytes"
            ) from exc

    def _round(self) -> None:
        step, config, state = self._step, self._config, self._state
        if state.flight is not None:
            self._committer.land()
        if not step.tick():
            self._stop.wait(config.poll_timeout_s)
            return
        consumer = state.consumer
        assert consumer is not None
        if config.mode == "assign" and state.clock() >= state.next_partition_check:
            self._clients.watch_partitions()
        state.doing = "poll"
        if self._columnar:
            chunks = consumer.poll_chunks(config.poll_timeout_s, config.max_batch)
            batch: Sequence[Record] | Sequence[Chunk] = chunks
            offsets = {TopicPartition(c.topic, c.partition): c.next_offset for c in chunks}
        else:
            records = consumer.poll(config.poll_timeout_s, config.max_batch)
            batch = records
            offsets = self._next_offsets(records)
        state.pending.update(offsets)
        if state.dirty:  # a revoke inside this poll lost the uncommitted work
            log.info("%s: a rebalance lost uncommitted work: redoing it", config.service)
            return
        if batch:
            outcomes = self._process(batch)
            tally = state.tally
            tally.batches += 1
            if self._columnar:
                tally.chunks += len(batch)
            else:
                tally.records += len(batch)
        else:
            idle = step.idle()
            if idle is None:
                self._faults.progressed()
                return
            outcomes = [idle]
        for outcome in outcomes:
            self._committer.write(outcome)
        if any(outcome.commit for outcome in outcomes):
            self._committer.commit()
        self._faults.progressed()

    def _next_offsets(self, records: list[Record]) -> dict[TopicPartition, int]:
        """The offset after the last record of each partition (a dict keeps the last)."""
        topics = self._config.topics
        if len(topics) == 1:  # int keys: three times cheaper than (topic, partition) tuples
            topic = topics[0]
            last = {r.partition: r.offset for r in records}
            return {TopicPartition(topic, p): o + 1 for p, o in last.items()}
        pairs = {(r.topic, r.partition): r.offset for r in records}
        return {TopicPartition(t, p): o + 1 for (t, p), o in pairs.items()}

    # --- processing --------------------------------------------------------------------

    def _process(self, batch: Sequence[Record] | Sequence[Chunk]) -> list[Outcome]:
        """The step's outcome for ``batch``; one record at a time if the batch fails."""
        try:
            outcome = self._call_step(batch)
        except BusError:
            raise
        except Exception as exc:
            log.warning(
                "%s: processing a batch failed (%s: %s): redoing it one record at a time",
                self._config.service,
                type(exc).__name__,
                exc,
            )
            return self._one_by_one(batch)
        too_large = self._oversized(outcome)
        if too_large is None:
            return [outcome]
        log.warning(
            "%s: %s: redoing the batch one record at a time", self._config.service, too_large
        )
        return self._one_by_one(batch)

    def _call_step(self, batch: Sequence[Record] | Sequence[Chunk]) -> Outcome:
        step = self._step
        if isinstance(step, ChunkStep):
            return step.process_chunks(cast("list[Chunk]", batch))
        return step.process(cast("list[Record]", batch))

    def _one_by_one(self, batch: Sequence[Record] | Sequence[Chunk]) -> list[Outcome]:
        """Each record processed alone; those that fail (or are too large) dead-lettered."""
        outcomes: list[Outcome] = []
        bad = Outcome(commit=False)
        for record, single in self._singles(batch):
            try:
                outcome = self._call_step(single)
            except BusError:
                raise
            except Exception as exc:
                bad.deadletters.append((record, f"{type(exc).__name__}: {exc}"))
                continue
            too_large = self._oversized(outcome)
            if too_large is not None:
                bad.deadletters.append((record, f"RecordTooLargeError: {too_large}"))
                continue
            outcomes.append(outcome)
        if bad.deadletters:
            # dead letters alone are always safe to commit; otherwise follow the step's wish
            bad.commit = not outcomes
            outcomes.append(bad)
        return outcomes

    def _singles(
        self, batch: Sequence[Record] | Sequence[Chunk]
    ) -> Iterator[tuple[Record, list[Record] | list[Chunk]]]:
        """Each record of ``batch`` with the one-record batch to process it alone."""
        if not self._columnar:
            for record in batch:
                assert isinstance(record, Record)
                yield record, [record]
            return
        for chunk in batch:
            assert isinstance(chunk, Chunk)
            topic, partition = chunk.topic, chunk.partition
            offsets, keys, values = chunk.columns()
            for offset, key, value in zip(offsets, keys, values, strict=True):
                # a chunk has no timestamps: -1 (unknown)
                record = Record(topic, partition, offset, key, value, -1)
                yield record, [Chunk(topic, partition, offset + 1, ([offset], [key], [value]))]

    def _oversized(self, outcome: Outcome) -> str | None:
        """What is wrong when an output value is over ``max_record_bytes`` (else None)."""
        limit = self._config.max_record_bytes
        for output in outcome.outputs:
            biggest = max(map(len, filter(None, output.values)), default=0)
            if biggest > limit:
                return (
                    f"an output to {output.topic!r} of {biggest} bytes is over the "
                    f"limit of {limit} bytes"
                )
        return None

    # --- stop --------------------------------------------------------------------------

    def _finish(self) -> None:
        """Commit the batch in hand and what the step writes last; sync the last offsets."""
        config, state, committer = self._config, self._state, self._committer
        deadline = state.deadline = time.monotonic() + config.finish_timeout_s
        try:
            if not committer.settle(deadline):
                return
        except FencedError as exc:
            raise fenced_error(config, exc) from exc
        except TransientBusError as exc:
            state.dirty = True
            log.debug("%s: the background commit failed: %s", config.service, exc)
        if state.dirty:
            log.warning(
                "%s: stopping with uncommitted work lost to a fault: it is read again "
                "at the next start",
                config.service,
            )
            committer.drop_open_transaction(deadline)
            return
        try:
            final = self._step.finish()
            if final is not None:
                committer.write(final)
            if state.pending or state.done or state.in_txn:
                committer.commit()
            if not committer.settle(deadline):
                return
            committer.sync_offsets()
        except FencedError as exc:
            raise fenced_error(config, exc) from exc
        except TransientBusError as exc:
            log.warning(
                "%s: the last commit failed (%s: %s): what it held is read again at the next start",
                config.service,
                state.doing,
                exc,
            )
            committer.drop_open_transaction(deadline)
