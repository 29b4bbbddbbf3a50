"""The kafka-python driver's consumer: `bus.clients.base.Consumer` on ``kafka.KafkaConsumer``.

Consumers read through `bus.clients.kafka_python_fetch` when this kafka-python
is the one it was written for: ``poll`` decodes raw record batches into `Record`s
in one tight loop, ``poll_chunks`` hands the batches out undecoded. Otherwise
(another version, internals changed) the library's own decoding is used, which
is about ten times slower, and that is logged once. Rebalance callbacks run while
``poll`` waits, on a worker thread (kafka-python calls listeners on its IO
thread, where a blocking call such as a commit on revoke is refused).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.protocol.metadata import MetadataRequest
from kafka.structs import TopicPartition as KafkaTopicPartition

from bus.clients.base import (
    Chunk,
    Consumer,
    RebalanceCallback,
    Record,
    TopicPartition,
    TransientBusError,
)
from bus.clients.kafka_python_config import kafka_offsets
from bus.clients.kafka_python_errors import classify

log = logging.getLogger(__name__)
# The fallback notice is the driver's, on the driver's logger (one per process).
_driver_log = logging.getLogger("bus.clients.kafka_python")


def _internal(obj: Any, name: str) -> Any:
    """One of kafka-python's internals (``name`` starts with ``_``; see the module doc)."""
    return getattr(obj, name)


class _Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Runs the caller's rebalance callbacks; keeps their first error for `poll` to raise.

    kafka-python calls listeners on its IO thread, where a blocking consumer call
    (a commit on revoke, a position or seek on assign) is refused. So each callback
    runs on a worker thread while the IO thread waits for it (heartbeats go on),
    and the caller's thread waits inside ``poll``: for the caller it runs inside poll.
    """

    def __init__(
        self, on_assign: RebalanceCallback | None, on_revoke: RebalanceCallback | None, net: Any
    ) -> None:
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.error: BaseException | None = None
        self._net = net

    async def _call(self, callback: RebalanceCallback | None, partitions: Any) -> None:
        if callback is None or self.error is not None or not partitions:
            return
        tps = sorted(TopicPartition(tp[0], tp[1]) for tp in partitions)
        done = threading.Event()

        def run() -> None:
            try:
                callback(tps)
            except BaseException as exc:  # raised again by poll, after the rebalance
                self.error = exc
            finally:
                done.set()

        threading.Thread(target=run, name="kafka-rebalance-callback", daemon=True).start()
        while not done.is_set():
            await self._net.sleep(0.002)

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._call(self.on_revoke, revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._call(self.on_assign, assigned)


class KafkaPythonConsumer(Consumer):
    """A `Consumer` on ``kafka.KafkaConsumer`` (fast batch decoding when possible)."""

    _fallback_logged = False

    def __init__(self, client: KafkaConsumer, config: Mapping[str, Any]) -> None:
        self._client = client
        self._group_id = config.get("group_id")
        self._timeout_ms = int(config.get("request_timeout_ms", 30_000))
        self._listener: _Listener | None = None
        self._raw: Any = None
        try:
            from bus.clients.kafka_python_fetch import install_raw_records

            installed = install_raw_records(client)
        except Exception as exc:  # an import or attribute of another kafka-python
            installed = f"{type(exc).__name__}: {exc}"
        if isinstance(installed, str):
            if not KafkaPythonConsumer._fallback_logged:
                KafkaPythonConsumer._fallback_logged = True
                _driver_log.info(
                    "kafka-python's own (slower) record decoding in use: %s", installed
                )
        else:
            self._raw = installed

    def _poll(self, timeout_s: float, max_records: int | None) -> dict[Any, list[Any]]:
        try:
            polled: dict[Any, list[Any]] = self._client.poll(
                timeout_ms=max(0, int(timeout_s * 1000)), max_records=max_records
            )
        except KafkaError as exc:
            raise classify(exc, "polling for records") from exc
        listener = self._listener
        if listener is not None and listener.error is not None:
            error, listener.error = listener.error, None
            raise error
        return polled

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        """Join the consumer group for ``topics``; callbacks run inside `poll`."""
        self._listener = _Listener(on_assign, on_revoke, _internal(self._client, "_net"))
        try:
            self._client.subscribe(list(topics), listener=self._listener)
            # Fresh metadata before the first join: a group joined before a new topic's
            # metadata came assigns nothing until the next refresh, and metadata that
            # changes after the join makes the group rebalance again.
            self._client.topics()
        except KafkaError as exc:
            raise classify(exc, f"subscribing to {', '.join(topics)}") from exc

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        """Read exactly these partitions (no group rebalancing)."""
        self._client.assign([KafkaTopicPartition(tp[0], tp[1]) for tp in partitions])

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads now."""
        return {TopicPartition(tp[0], tp[1]) for tp in self._client.assignment()}

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        """Records of the assigned partitions, in offset order per partition (may be empty)."""
        raw = self._raw
        if raw is not None:
            raw.chunk_mode = False
            polled = self._poll(timeout_s, max_records)
            if len(polled) == 1:
                for records in polled.values():
                    return records
            out: list[Record] = []
            for records in polled.values():
                out += records
            return out
        make = Record
        return [
            make(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, r.headers)
            for records in self._poll(timeout_s, max_records).values()
            for r in records
        ]

    def poll_chunks(self, timeout_s: float, max_records: int | None = None) -> list[Chunk]:
        """Per-partition chunks of still-encoded record batches (decoded where they are used)."""
        raw = self._raw
        if raw is None:
            return super().poll_chunks(timeout_s, max_records)
        from bus.clients.kafka_python_fetch import RawBatches

        raw.chunk_mode = True
        return [
            Chunk(tp[0], tp[1], batches[-1].next_offset, RawBatches(tuple(batches)))
            for tp, batches in self._poll(timeout_s, max_records).items()
            if batches
        ]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` on."""
        try:
            self._client.seek(KafkaTopicPartition(tp[0], tp[1]), offset)
        except KafkaError as exc:
            raise classify(exc, f"seeking {tp[0]}[{tp[1]}] to {offset}") from exc

    def seek_to_beginning(self, tps: Sequence[TopicPartition]) -> None:
        """Read these partitions from their first offset."""
        if not tps:
            return
        try:
            self._client.seek_to_beginning(*(KafkaTopicPartition(t, p) for t, p in tps))
        except KafkaError as exc:
            raise classify(exc, "seeking to the beginning") from exc

    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record `poll` returns for ``tp``."""
        try:
            offset = self._client.position(
                KafkaTopicPartition(tp[0], tp[1]), timeout_ms=self._timeout_ms
            )
        except KafkaError as exc:
            raise classify(exc, f"reading the position of {tp[0]}[{tp[1]}]") from exc
        if offset is None:
            raise TransientBusError(
                f"no position for {tp[0]}[{tp[1]}] within {self._timeout_ms} ms "
                "(no committed offset or offset reset answered); retry"
            )
        return int(offset)

    def commit(self, offsets: Mapping[TopicPartition, int], *, asynchronous: bool = False) -> None:
        """Commit the next offsets to read; a synchronous commit raises on failure."""
        if not offsets:
            return
        try:
            if asynchronous:
                self._client.commit_async(kafka_offsets(offsets), callback=_log_async_commit)
            else:
                self._client.commit(kafka_offsets(offsets), timeout_ms=self._timeout_ms)
        except KafkaError as exc:
            raise classify(exc, "committing offsets") from exc

    def committed(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (None where nothing is committed)."""
        try:
            return {
                TopicPartition(t, p): self._client.committed(
                    KafkaTopicPartition(t, p), timeout_ms=self._timeout_ms
                )
                for t, p in tps
            }
        except KafkaError as exc:
            raise classify(exc, "reading committed offsets") from exc

    def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after the last record of each partition (the last stable one)."""
        if not tps:
            return {}
        try:
            ends = self._client.end_offsets(
                [KafkaTopicPartition(t, p) for t, p in tps], timeout_ms=self._timeout_ms
            )
        except KafkaError as exc:
            raise classify(exc, "reading end offsets") from exc
        return {TopicPartition(tp[0], tp[1]): int(offset) for tp, offset in ends.items()}

    def partitions_for(self, topic: str) -> list[int]:
        """The topic's partition ids from fresh metadata; empty when it does not exist."""
        try:
            found = topic_partitions(self._client, topic, self._timeout_ms)
            if found is None:  # another kafka-python: metadata of every topic, then the cache
                self._client.topics()
                found = sorted(self._client.partitions_for_topic(topic) or ())
        except KafkaError as exc:
            raise classify(exc, f"reading the partitions of {topic!r}") from exc
        return found

    def group_metadata(self) -> object:
        """What `Producer.send_offsets_to_transaction` needs for this consumer's group."""
        return self._client.group_metadata()

    def close(self) -> None:
        """Leave the group (no commit) and release the client."""
        try:
            self._client.close(autocommit=False)
        except KafkaError as exc:
            log.warning("closing the consumer: %s", exc)


def _log_async_commit(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):
        log.warning(
            "an asynchronous offset commit failed (%s); the next commit covers it", response
        )


def topic_partitions(client: KafkaConsumer, topic: str, timeout_ms: int) -> list[int] | None:
    """``topic``'s sorted partition ids, asked of the broker for that topic alone.

    Empty when the topic does not exist (or has an error, such as no leader yet);
    the request never creates it. ``KafkaConsumer.topics()`` would fetch and decode
    the metadata of every topic of the cluster instead (tens of milliseconds of
    CPU with hundreds of topics). The request goes through the consumer's own
    connections on its IO thread, as kafka-python's admin client sends its own;
    it leaves the consumer's metadata cache alone. None when this kafka-python
    lacks those internals: then the caller falls back to ``topics()``.
    """
    manager = getattr(client, "_manager", None)
    net = getattr(client, "_net", None)
    if manager is None or net is None or not hasattr(manager, "wait_for"):
        return None
    request = MetadataRequest(
        topics=[MetadataRequest.MetadataRequestTopic(name=topic)],
        allow_auto_topic_creation=False,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    )

    async def ask() -> Any:
        return await manager.wait_for(manager.send(request), timeout_ms)

    response = net.run(ask)
    for found in response.topics:
        if found.name == topic:
            if found.error_code != 0:
                return []
            return sorted(p.partition_index for p in found.partitions)
    return []
