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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from typing import Any, cast

from bus.clients.base import (
    Chunk,
    Consumer,
    Driver,
    FencedError,
    Producer,
    Record,
    RecordTooLargeError,
    TopicPartition,
    TransientBusError,
)
from bus.deadletter import DeadLetters
from bus.partitions import topic_partitions
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
    for new partitions.
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
        self._driver = driver
        self._config = config
        self._step = step
        self._columnar = isinstance(step, ChunkStep)
        self._stop = stop or StopFlag()
        self._clock = clock
        self._eos = config.exactly_once
        self.stats = StreamStats()
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._deadletters: DeadLetters | None = None
        # next offsets read since the last commit (what the next commit commits)
        self._pending: dict[TopicPartition, int] = {}
        # where the last commit left each partition (None: the beginning); absent: ask the group
        self._origin: dict[TopicPartition, int | None] = {}
        # offsets committed asynchronously since the last synchronous commit
        self._unsynced: dict[TopicPartition, int] = {}
        self._done: list[Outcome] = []  # outcomes since the last commit
        self._tally = StreamStats()  # their work, counted into stats at the commit
        self._written = False  # something was sent since the last commit
        self._in_txn = False
        self._dirty = False  # a fault or a rebalance lost the uncommitted work: redo it
        self._fault_since: float | None = None
        self._backoff = config.backoff_s
        self._doing = "start"
        self._next_partition_check = 0.0
        self._flight: _Flight | None = None  # the background commit in flight
        self._held: list[Outcome] = []  # outcomes that came while it flies, not written yet
        self._commit_wanted = False  # an outcome asked for a commit while it flies
        self._deadline: float | None = None  # when the stop's waits end (set at stop)

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
            self._close()
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

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run ``action`` (after redoing lost work); turn bus faults into retries or a stop."""
        try:
            if self._dirty:
                self._recover()
                if self._dirty:  # stopped while a background commit was in flight
                    return
            action()
        except _StoppedError:  # a blocking call is left to finish alone: the stop goes on
            return
        except FencedError as exc:
            raise self._fenced(exc) from exc
        except TransientBusError as exc:
            self._dirty = True
            self._fault(exc)
        except RecordTooLargeError as exc:
            raise BusError(
                f"{self._config.service}: the producer refused a record as too large ({exc}); "
                "outputs are checked against max_record_bytes, which must stay below the "
                "producer's max_request_size and the broker's message.max.bytes"
            ) from exc

    def _round(self) -> None:
        step, config = self._step, self._config
        if self._flight is not None:
            self._land()
        if not step.tick():
            self._stop.wait(config.poll_timeout_s)
            return
        consumer = self._consumer
        assert consumer is not None
        if config.mode == "assign" and self._clock() >= self._next_partition_check:
            self._watch_partitions()
        self._doing = "poll"
        if self._columnar:
            chunks = consumer.poll_chunks(config.poll_timeout_s, config.max_batch)
            batch: Sequence[Record] | Sequence[Chunk] = chunks
            offsets = {TopicPartition(c.topic, c.partition): c.next_offset for c in chunks}
        else:
            records = consumer.poll(config.poll_timeout_s, config.max_batch)
            batch = records
            offsets = self._next_offsets(records)
        self._pending.update(offsets)
        if self._dirty:  # a revoke inside this poll lost the uncommitted work
            log.info("%s: a rebalance lost uncommitted work: redoing it", config.service)
            return
        if batch:
            outcomes = self._process(batch)
            tally = self._tally
            tally.batches += 1
            if self._columnar:
                tally.chunks += len(batch)
            else:
                tally.records += len(batch)
        else:
            idle = step.idle()
            if idle is None:
                self._progressed()
                return
            outcomes = [idle]
        for outcome in outcomes:
            self._write(outcome)
        if any(outcome.commit for outcome in outcomes):
            self._commit()
        self._progressed()

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

    # --- writing and committing --------------------------------------------------------

    def _write(self, outcome: Outcome) -> None:
        """Send ``outcome``'s outputs and dead letters (opening a transaction if needed).

        While a background commit is in flight the outcome is held, to be written
        once it is done.
        """
        if self._flight is not None:
            self._held.append(outcome)
            return
        self._done.append(outcome)
        if not outcome.outputs and not outcome.deadletters:
            return
        producer, deadletters = self._producer, self._deadletters
        assert producer is not None and deadletters is not None
        if self._eos and not self._in_txn:
            self._doing = "begin_transaction"
            producer.begin_transaction()
            self._in_txn = True
        self._written = True
        self._doing = "send"
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
        for record, reason in outcome.deadletters:
            deadletters.send(record, reason)
        self._tally.outputs += sent
        self._tally.deadletters += len(outcome.deadletters)

    def _commit(self) -> None:
        """Make everything since the last commit durable, with its offsets; tell the step."""
        producer, consumer = self._producer, self._consumer
        assert producer is not None and consumer is not None
        if self._flight is not None:  # one at a time: this one starts once that one is done
            self._commit_wanted = True
            return
        offsets = self._pending
        durable = bool(offsets or self._written)
        if self._eos:
            if offsets or self._in_txn:
                if not self._in_txn:
                    self._doing = "begin_transaction"
                    producer.begin_transaction()
                    self._in_txn = True
                if self._config.background_commit:
                    self._launch(offsets, durable)
                    return
                if offsets:
                    self._doing = "send_offsets_to_transaction"
                    producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
                self._doing = "commit_transaction"
                producer.commit_transaction()
                self._in_txn = False
        else:
            if self._written:
                self._doing = "flush"
                producer.flush()
            if offsets:
                # the outputs are acknowledged: commit without waiting for the answer
                # (the last offsets are committed synchronously at revoke and at stop)
                self._doing = "commit"
                consumer.commit(offsets, asynchronous=True)
                self._unsynced.update(offsets)
        self._pending = {}
        self._written = False
        tally, self._tally = self._tally, StreamStats()
        done, self._done = self._done, []
        self._settled(offsets, durable, tally, done)

    def _settled(
        self,
        offsets: dict[TopicPartition, int],
        durable: bool,
        tally: StreamStats,
        done: list[Outcome],
    ) -> None:
        """A commit went through: note where it left the partitions, count it, tell the step."""
        self._origin.update(offsets)
        if durable:
            self.stats.commits += 1
        self.stats.add(tally)
        for outcome in done:
            self._step.committed(outcome)

    # --- background commits -------------------------------------------------------------

    def _launch(self, offsets: dict[TopicPartition, int], durable: bool) -> None:
        """Commit the open transaction, with ``offsets``, on a thread of its own.

        The work it covers leaves ``_done`` and ``_tally``; ``_pending`` keeps its
        offsets until it is done (a failure redoes everything since the last commit).
        """
        consumer = self._consumer
        assert consumer is not None and self._producer is not None
        self._doing = "group_metadata"
        group = consumer.group_metadata() if offsets else None
        flight = _Flight(dict(offsets), durable, self._tally, self._done)
        self._tally, self._done, self._written = StreamStats(), [], False
        self._flight = flight
        flight.start(self._producer, group, f"{self._config.service}-commit")

    def _land(self, wait_s: float = 0.0, *, resume: bool = True) -> bool:
        """Settle the background commit if it is done (waiting up to ``wait_s``).

        Returns False while it is still in flight. Raises its error if it failed
        (the transaction stays open, to be aborted). ``resume``: then write the
        outcomes held meanwhile, and start the commit asked for meanwhile.
        """
        flight = self._flight
        if flight is None:
            return True
        if not flight.finished.wait(wait_s):
            return False
        self._flight = None
        if flight.error is not None:
            self._doing = flight.doing
            raise flight.error
        self._in_txn = False
        pending = self._pending
        for tp, offset in flight.offsets.items():
            if pending.get(tp) == offset:
                del pending[tp]
        self._settled(flight.offsets, flight.durable, flight.tally, flight.done)
        if resume:
            held, self._held = self._held, []
            for outcome in held:
                self._write(outcome)
            if self._commit_wanted:
                self._commit_wanted = False
                self._commit()
        return True

    # --- faults ------------------------------------------------------------------------

    def _fault(self, exc: TransientBusError) -> None:
        """Count a transient fault; back off, or give up once the retry budget is spent."""
        config = self._config
        now = self._clock()
        self.stats.faults += 1
        if self._fault_since is None:
            self._fault_since = now
        failing = now - self._fault_since
        if failing >= config.retry_s:
            raise BusError(
                f"{config.service}: Kafka calls have failed for {failing:.0f}s without a "
                f"successful round (last: {self._doing} failed: {exc}). Check that the brokers "
                "(KAFKA_BOOTSTRAP_SERVERS) are up and reachable, that the topics exist and "
                f"that the client settings are right; {RETRY_ENV} sets how long to retry"
            ) from exc
        log.warning(
            "%s: %s failed (%s): redoing the uncommitted work from the last commit "
            "in %.1fs (retrying for %.0fs more)",
            config.service,
            self._doing,
            exc,
            self._backoff,
            config.retry_s - failing,
        )
        self._stop.wait(self._backoff)
        self._backoff = min(self._backoff * 2, config.backoff_max_s)

    def _progressed(self) -> None:
        """A round went through: note it, and end a run of faults."""
        now = self._clock()
        self.stats.last_progress = now
        if self._fault_since is not None:
            log.info(
                "%s: recovered after %.1f s (%d faults so far)",
                self._config.service,
                now - self._fault_since,
                self.stats.faults,
            )
            self._fault_since = None
            self._backoff = self._config.backoff_s

    def _recover(self) -> None:
        """Drop the uncommitted work: abort the transaction, seek back, tell the step.

        A background commit in flight is waited for first (while the stop flag is
        not set: stopped, this returns with the work still to recover).
        """
        if self._flight is not None:
            while not self._flight.finished.wait(0.05):
                if self._stop.is_set():
                    return
            try:
                self._land(resume=False)
            except TransientBusError as exc:  # its work is redone with the rest
                log.debug("%s: the background commit failed too: %s", self._config.service, exc)
        self._held = []
        self._commit_wanted = False
        self._abort()
        consumer = self._consumer
        assert consumer is not None
        pending = self._pending
        if pending:
            unknown = [tp for tp in pending if tp not in self._origin]
            if unknown:
                self._doing = "committed"
                self._origin.update(consumer.committed(unknown))
            self._doing = "seek"
            assigned = consumer.assignment()
            for tp in pending:
                if tp not in assigned:
                    continue
                origin = self._origin.get(tp)
                if origin is None:
                    consumer.seek_to_beginning([tp])
                else:
                    consumer.seek(tp, origin)
        self._pending = {}
        self._done = []
        self._tally = StreamStats()
        self._written = False
        self._dirty = False
        self.stats.rewinds += 1
        self._step.rewind()

    def _abort(self) -> None:
        """Abort the open transaction; a producer that cannot abort is replaced."""
        if self._producer is None:
            self._producer = self._new_producer()
        if not self._in_txn:
            return
        self._in_txn = False
        self._doing = "abort_transaction"
        try:
            self._blocking(self._producer.abort_transaction)
            self.stats.aborts += 1
        except FencedError:
            raise
        except BusError as exc:
            log.warning(
                "%s: aborting the transaction failed (%s): starting a new producer",
                self._config.service,
                exc,
            )
            old, self._producer = self._producer, None
            _close_quietly(old)
            self._producer = self._new_producer()

    def _fenced(self, exc: FencedError) -> BusError:
        config = self._config
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

    # --- clients, assignment and rebalances -------------------------------------------

    def _open(self) -> bool:
        """Make the clients and start reading (False: stopped first); retries transient faults."""
        config = self._config
        while True:
            try:
                self._producer = self._new_producer()
                self._doing = "consumer"
                options: dict[str, Any] = {
                    "group_id": config.group_id,
                    "max_poll_records": config.max_batch,
                }
                if config.group_instance_id:
                    options["group_instance_id"] = config.group_instance_id
                self._consumer = self._driver.consumer(**{**options, **config.consumer_options})
                self._doing = "partitions_for"
                partitions = topic_partitions(
                    self._consumer, list(config.topics), config.topic_wait_s, stop=self._stop
                )
                if config.mode == "subscribe":
                    self._doing = "subscribe"
                    self._consumer.subscribe(
                        list(config.topics), on_assign=self._on_assign, on_revoke=self._on_revoke
                    )
                else:
                    self._assign(partitions, partitions)
                self._progressed()
                return not self._stop.is_set()
            except _StoppedError:
                self._close()
                return False
            except FencedError as exc:
                raise self._fenced(exc) from exc
            except TransientBusError as exc:
                self._close()
                self._fault(exc)
                if self._stop.is_set():
                    return False

    def _new_producer(self) -> Producer:
        """A producer; in exactly-once mode holding the transactional id (fencing older ones)."""
        config = self._config
        self._doing = "producer"
        options = dict(config.producer_options)
        if config.exactly_once:
            options["transactional_id"] = config.transactional_id
        producer = self._driver.producer(**options)
        if config.exactly_once:
            self._doing = "init_transactions"
            try:
                self._blocking(producer.init_transactions)
            except BusError:
                _close_quietly(producer)
                raise
        if self._deadletters is None:
            self._deadletters = DeadLetters(
                producer,
                config.deadletter_topic,
                config.service,
                max_bytes=config.max_record_bytes,
            )
        self._deadletters.producer = producer
        return producer

    def _assign(self, partitions: list[TopicPartition], new: list[TopicPartition]) -> None:
        """Assign mode: read ``partitions``; place ``new`` ones where the step says."""
        consumer = self._consumer
        assert consumer is not None
        # where each partition already read continues: the next offset read, or the last commit
        resume = {tp: self._pending.get(tp, self._origin.get(tp, -1)) for tp in partitions}
        self._doing = "assign"
        consumer.assign(partitions)
        placed = dict(self._step.start(new)) if new else {}
        self._doing = "seek"
        for tp in partitions:
            if tp in placed:
                offset = self._origin[tp] = placed[tp]
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
        self._next_partition_check = self._clock() + self._config.partition_check_s

    def _watch_partitions(self) -> None:
        """Assign mode: also read partitions added to the topics since the last check."""
        consumer = self._consumer
        assert consumer is not None
        self._doing = "partitions_for"
        found = [
            TopicPartition(topic, p)
            for topic in self._config.topics
            for p in consumer.partitions_for(topic)
        ]
        known = consumer.assignment()
        new = [tp for tp in found if tp not in known]
        if new:
            log.info(
                "%s: new partitions %s: reading them too",
                self._config.service,
                ", ".join(f"{tp.topic}[{tp.partition}]" for tp in new),
            )
            self._assign(sorted(known | set(new)), new)
        self._next_partition_check = self._clock() + self._config.partition_check_s

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        """Subscribe mode: newly assigned partitions start at the group's committed offsets."""
        for tp in partitions:
            self._origin.pop(tp, None)
        log.info("%s: assigned %s", self._config.service, _names(partitions))

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Subscribe mode: settle the uncommitted work before these partitions go."""
        if not partitions:  # some clients report the first join as an empty revoke
            return
        revoked = set(partitions)
        log.info("%s: revoked %s", self._config.service, _names(partitions))
        lost = {tp: o for tp, o in self._pending.items() if tp in revoked}
        if self._eos:
            # KIP-447: a commit of this generation would be refused; redo what is open
            if self._pending or self._in_txn:
                self._dirty = True
        elif lost:
            try:
                if self._written:
                    assert self._producer is not None
                    self._producer.flush()
                    self._written = False
                assert self._consumer is not None
                self._consumer.commit(lost)
            except BusError as exc:
                log.warning(
                    "%s: could not commit the work of the revoked partitions (%s): "
                    "their new owner reads it again",
                    self._config.service,
                    exc,
                )
                self._dirty = True
        for tp in revoked:
            self._pending.pop(tp, None)
            self._origin.pop(tp, None)
            self._unsynced.pop(tp, None)
        try:
            self._step.revoked(partitions)
        except Exception:
            log.exception("%s: the step's revoked() failed", self._config.service)

    # --- stop --------------------------------------------------------------------------

    def _finish(self) -> None:
        """Commit the batch in hand and what the step writes last; sync the last offsets."""
        config = self._config
        deadline = self._deadline = time.monotonic() + config.finish_timeout_s
        try:
            if not self._settle(deadline):
                return
        except FencedError as exc:
            raise self._fenced(exc) from exc
        except TransientBusError as exc:
            self._dirty = True
            log.debug("%s: the background commit failed: %s", config.service, exc)
        if self._dirty:
            log.warning(
                "%s: stopping with uncommitted work lost to a fault: it is read again "
                "at the next start",
                config.service,
            )
            self._drop_open_transaction(deadline)
            return
        try:
            final = self._step.finish()
            if final is not None:
                self._write(final)
            if self._pending or self._done or self._in_txn:
                self._commit()
            if not self._settle(deadline):
                return
            if self._unsynced and self._consumer is not None:
                owned = self._consumer.assignment()
                offsets = {tp: o for tp, o in self._unsynced.items() if tp in owned}
                if offsets:
                    self._doing = "commit"
                    self._consumer.commit(offsets)
                self._unsynced = {}
        except FencedError as exc:
            raise self._fenced(exc) from exc
        except TransientBusError as exc:
            log.warning(
                "%s: the last commit failed (%s: %s): what it held is read again at the next start",
                config.service,
                self._doing,
                exc,
            )
            self._drop_open_transaction(deadline)

    def _settle(self, deadline: float) -> bool:
        """Stop: land background commits until none is left (True), or ``deadline`` passes."""
        while self._flight is not None:
            if not self._land(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "%s: a commit is still in flight after %.0fs: stopping without it; "
                    "if it does not complete, what it held is read again at the next start",
                    self._config.service,
                    self._config.finish_timeout_s,
                )
                return False
        self._commit_wanted = False  # the last commit covers it
        return True

    def _drop_open_transaction(self, deadline: float) -> None:
        """Stop: abort the open transaction, waiting until ``deadline`` at most."""
        if self._flight is not None:  # still committing: leave it to Kafka
            return
        if self._in_txn and self._producer is not None:
            self._in_txn = False
            try:
                self._blocking(self._producer.abort_transaction, deadline)
                self.stats.aborts += 1
            except _StoppedError:
                log.warning(
                    "%s: aborting the open transaction takes over %.0fs: stopping without "
                    "waiting (Kafka aborts it when it times out, or at the next start)",
                    self._config.service,
                    self._config.finish_timeout_s,
                )
            except BusError as exc:
                log.debug("aborting on stop: %s", exc)

    def _blocking(self, call: Callable[[], object], deadline: float | None = None) -> None:
        """Run a blocking client call on a helper thread, and wait for it.

        Raises what the call raised, or `_StoppedError` when the stop flag is set first
        (or, with a ``deadline``, when it passes): the call then goes on alone, and
        the loop stops without it.
        """
        done = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            try:
                call()
            except BaseException as exc:
                failed.append(exc)
            finally:
                done.set()

        name = f"{self._config.service}-{self._doing}"
        threading.Thread(target=run, name=name, daemon=True).start()
        while not done.wait(0.05):
            if deadline is None and self._stop.is_set():
                raise _StoppedError(self._doing)
            if deadline is not None and time.monotonic() >= deadline:
                raise _StoppedError(self._doing)
        if failed:
            raise failed[0]

    def _close(self) -> None:
        """Close the consumer (leaving the group), then the producer.

        After a stop, the producer gets what is left of ``finish_timeout_s`` to
        deliver what it holds.
        """
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except BusError as exc:
                log.debug("closing the consumer: %s", exc)
        producer, self._producer = self._producer, None
        if producer is not None:
            timeout = self._config.finish_timeout_s
            if self._deadline is not None:
                timeout = max(0.0, self._deadline - time.monotonic())
            _close_quietly(producer, timeout)


class _Flight:
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


class _StoppedError(Exception):
    """The stop flag was set (or the stop's deadline passed) during a blocking client call."""


def _close_quietly(producer: Producer, timeout_s: float = 10.0) -> None:
    try:
        producer.close(timeout_s)
    except BusError as exc:
        log.debug("closing a producer: %s", exc)


def _names(partitions: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
