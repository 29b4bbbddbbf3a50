"""The confluent-kafka driver's consumer: `bus.clients.base.Consumer` on librdkafka.

Consumers take what librdkafka has prefetched without waiting (``consume`` with
no timeout) and block only when nothing is there, for one message: a poll returns
as soon as there is something to return, like kafka-python's. Chunks are built
straight from the messages, column by column.

Positions: librdkafka's own position is the last record delivered + 1. Older
librdkafka releases leave it on the commit marker that ends a transaction, so a
reader of a topic written transactionally would never see its position reach
the end offset; and ``consume`` (2.16) moves it one past the offset of a
partition-EOF event, past the end. So the driver asks for partition-EOF events
(``enable.partition.eof``), which carry the offset the fetcher reached, and
`position` reports that offset until a record of the partition comes. Before
anything was read, librdkafka has no position at all; `position` then reports
where the next fetch starts (a seek, the committed offset, or the reset policy).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import (  # type: ignore[import-untyped]
    OFFSET_BEGINNING,
    KafkaError,
    KafkaException,
)
from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import TopicPartition as ConfluentTopicPartition

from bus.clients.base import (
    Chunk,
    Columns,
    Consumer,
    RebalanceCallback,
    Record,
    TopicPartition,
    TransientBusError,
)
from bus.clients.confluent_errors import (
    EOF_CODE,
    INFORMATIONAL_CODES,
    OUTDATED_CODE,
    STATE_CODE,
    classify,
    library_error,
    make_client,
)
from bus.settings import KafkaSettings
from core.errors import BusError

__all__ = ["ConfluentKafkaConsumer"]

log = logging.getLogger(__name__)


def _ours(partitions: Sequence[Any]) -> list[TopicPartition]:
    return sorted(TopicPartition(tp.topic, tp.partition) for tp in partitions)


class ConfluentKafkaConsumer(Consumer):
    """A `Consumer` on ``confluent_kafka.Consumer``."""

    def __init__(
        self, settings: KafkaSettings, config: dict[str, Any], *, joined: bool, max_records: int
    ) -> None:
        self._settings = settings
        self._joined = joined
        self._max_records = max_records
        self._earliest = config.get("auto.offset.reset") == "earliest"
        self._timeout_s = settings.request_timeout_ms / 1000
        # Positions librdkafka does not report right: the end a partition's fetch reached
        # (past a final commit marker), or a seek; dropped when a record of it comes.
        self._known: dict[tuple[str, int], int] = {}
        self._assigning: dict[tuple[str, int], Any] | None = None  # inside on_assign
        self._callback_error: BaseException | None = None
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._client = make_client(
            ConfluentConsumer, settings, {**config, "on_commit": _log_async_commit}
        )

    # --- polling --------------------------------------------------------------------

    def _messages(self, timeout_s: float, max_records: int | None) -> list[Any]:
        """What librdkafka has ready, waiting up to ``timeout_s`` for the first one."""
        n = max_records or self._max_records
        client = self._client
        try:
            messages: list[Any] = client.consume(n, 0)
            if not messages and timeout_s > 0:
                first = client.poll(timeout_s)
                if first is not None:
                    messages = [first]
                    if n > 1:
                        messages += client.consume(n - 1, 0)
        except KafkaException as exc:
            raise classify(exc, "polling for records") from exc
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error
        return messages

    def _message_error(self, message: Any) -> None:
        """An event in the stream: a partition's end (kept for `position`), or an error."""
        error = message.error()
        if error.code() == EOF_CODE:
            self._known[(message.topic(), message.partition())] = message.offset()
            return
        if error.code() in INFORMATIONAL_CODES:
            log.debug("consumer: %s (retried by the client)", error.str())
            return
        exc = KafkaException(error)
        raise classify(exc, "polling for records") from exc

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        """Records of the assigned partitions, in offset order per partition (may be empty)."""
        messages = self._messages(timeout_s, max_records)
        known = self._known
        out: list[Record] = []
        add = out.append
        for m in messages:
            if m.error() is not None:
                self._message_error(m)
                continue
            if known:
                known.pop((m.topic(), m.partition()), None)
            add(
                Record(
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    m.key(),
                    m.value(),
                    m.timestamp()[1],
                    m.headers() or (),
                )
            )
        return out

    def poll_chunks(self, timeout_s: float, max_records: int | None = None) -> list[Chunk]:
        """Per-partition columns built straight from the messages (no `Record` objects)."""
        messages = self._messages(timeout_s, max_records)
        known = self._known
        columns: dict[tuple[str, int], Columns] = {}
        topic: str | None = None
        partition = -1
        offsets: list[int] = []
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        for m in messages:
            if m.error() is not None:
                self._message_error(m)
                continue
            p = m.partition()
            t = m.topic()
            if known:
                known.pop((t, p), None)
            if p != partition or t != topic:
                topic, partition = t, p
                offsets, keys, values = columns.setdefault((t, p), ([], [], []))
            offsets.append(m.offset())
            keys.append(m.key())
            values.append(m.value())
        return [Chunk(t, p, cols[0][-1] + 1, cols) for (t, p), cols in columns.items() if cols[0]]

    # --- assignment ---------------------------------------------------------------

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        """Run on_assign, then assign (at the offsets it seeked to: librdkafka cannot seek yet)."""
        for tp in partitions:
            self._forget((tp.topic, tp.partition))
        self._assigning = {(tp.topic, tp.partition): tp for tp in partitions}
        try:
            self._callback(self._on_assign, partitions)
        finally:
            starts, self._assigning = self._assigning, None
        self._client.assign(list(starts.values()))

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        self._callback(self._on_revoke, partitions)
        for tp in partitions:
            self._forget((tp.topic, tp.partition))

    def _callback(self, callback: RebalanceCallback | None, partitions: list[Any]) -> None:
        if callback is None or self._callback_error is not None or not partitions:
            return
        try:
            callback(_ours(partitions))
        except BaseException as exc:  # raised again by poll, after the rebalance
            self._callback_error = exc

    def _forget(self, key: tuple[str, int]) -> None:
        self._known.pop(key, None)

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        """Join the consumer group for ``topics``; callbacks run inside `poll`."""
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        try:
            self._client.subscribe(
                list(topics), on_assign=self._assigned, on_revoke=self._revoked,
                on_lost=self._revoked,
            )  # fmt: skip
        except KafkaException as exc:
            raise classify(exc, f"subscribing to {', '.join(topics)}") from exc

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        """Read exactly these partitions (no group rebalancing)."""
        self._known.clear()
        try:
            self._client.assign([ConfluentTopicPartition(t, p) for t, p in partitions])
        except KafkaException as exc:
            raise classify(exc, "assigning partitions") from exc

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads now."""
        return {TopicPartition(tp.topic, tp.partition) for tp in self._client.assignment()}

    # --- positions --------------------------------------------------------------------

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` on."""
        topic, partition = tp
        key = (topic, partition)
        self._forget(key)
        if self._assigning is not None and key in self._assigning:
            self._assigning[key] = ConfluentTopicPartition(topic, partition, offset)
            self._known[key] = offset
            return
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                self._client.seek(ConfluentTopicPartition(topic, partition, offset))
                break
            except KafkaException as exc:
                error = library_error(exc)
                code = None if error is None else error.code()
                if code not in (STATE_CODE, OUTDATED_CODE):
                    raise classify(exc, f"seeking {topic}[{partition}] to {offset}") from exc
                # the partition does not fetch yet (just assigned), or the client was
                # resetting its position as the seek came (outdated): try again
                if code == STATE_CODE and not self._joined:  # manual: start it there instead
                    self._client.incremental_unassign([ConfluentTopicPartition(topic, partition)])
                    self._client.incremental_assign(
                        [ConfluentTopicPartition(topic, partition, offset)]
                    )
                    break
                if time.monotonic() > deadline:
                    raise classify(exc, f"seeking {topic}[{partition}] to {offset}") from exc
                time.sleep(0.01)
        self._known[key] = offset

    def seek_to_beginning(self, tps: Sequence[TopicPartition]) -> None:
        """Read these partitions from their first offset."""
        for tp in tps:
            self.seek(tp, OFFSET_BEGINNING)

    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record `poll` returns for ``tp`` (past a final commit marker)."""
        topic, partition = tp
        known = self._known.get((topic, partition))
        if known is not None and known >= 0:
            return known
        if known is None:
            try:
                (found,) = self._client.position([ConfluentTopicPartition(topic, partition)])
            except KafkaException as exc:
                raise classify(exc, f"reading the position of {topic}[{partition}]") from exc
            if found.offset >= 0:
                return int(found.offset)
        return self._start_offset(tp, known)

    def _start_offset(self, tp: TopicPartition, seeked: int | None) -> int:
        """Where the next fetch of a partition nothing was read from starts."""
        if seeked is None and self._joined:
            committed = self.committed([tp])[tp]
            if committed is not None:
                return committed
        low, high = self._watermarks(tp)
        earliest = self._earliest if seeked is None else seeked == OFFSET_BEGINNING
        return low if earliest else high

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        try:
            found = self._client.get_watermark_offsets(
                ConfluentTopicPartition(tp[0], tp[1]), timeout=self._timeout_s
            )
        except KafkaException as exc:
            raise classify(exc, f"reading the offsets of {tp[0]}[{tp[1]}]") from exc
        if found is None:
            raise TransientBusError(
                f"no answer for the offsets of {tp[0]}[{tp[1]}] within {self._timeout_s:.0f}s; "
                "retry"
            )
        return int(found[0]), int(found[1])

    def commit(self, offsets: Mapping[TopicPartition, int], *, asynchronous: bool = False) -> None:
        """Commit the next offsets to read; a synchronous commit raises on failure."""
        if not offsets:
            return
        if not self._joined:
            raise BusError("this consumer has no group_id: it cannot commit offsets")
        positions = [ConfluentTopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            if asynchronous:
                self._client.commit(offsets=positions, asynchronous=True)
                return
            results = self._client.commit(offsets=positions, asynchronous=False)
        except KafkaException as exc:
            raise classify(exc, "committing offsets") from exc
        for result in results or ():
            if result.error is not None:
                failure = KafkaException(result.error)
                raise classify(failure, f"committing the offset of {result.topic}") from failure

    def committed(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing is committed)."""
        if not tps:
            return {}
        try:
            found = self._client.committed(
                [ConfluentTopicPartition(t, p) for t, p in tps], timeout=self._timeout_s
            )
        except KafkaException as exc:
            raise classify(exc, "reading committed offsets") from exc
        return {
            TopicPartition(f.topic, f.partition): (int(f.offset) if f.offset >= 0 else None)
            for f in found
        }

    def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after the last record of each partition (the last stable one)."""
        return {TopicPartition(tp[0], tp[1]): self._watermarks(tp)[1] for tp in tps}

    def partitions_for(self, topic: str) -> list[int]:
        """The topic's partition ids from fresh metadata; empty when it does not exist."""
        try:
            metadata = self._client.list_topics(topic, timeout=self._timeout_s)
        except KafkaException as exc:
            raise classify(exc, f"reading the partitions of {topic!r}") from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return []
        return sorted(found.partitions)

    def group_metadata(self) -> object:
        """What `Producer.send_offsets_to_transaction` needs for this consumer's group."""
        return self._client.consumer_group_metadata()

    def close(self) -> None:
        """Leave the group (no commit) and release the client."""
        try:
            self._client.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing the consumer: %s", exc)


def _log_async_commit(error: KafkaError | None, partitions: Any) -> None:
    if error is not None:
        log.warning("an offset commit failed (%s); the next commit covers it", error.str())
