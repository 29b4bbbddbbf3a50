"""Fast reading for the kafka-python driver: raw record batches instead of per-record objects.

kafka-python decodes every record into a ``ConsumerRecord`` in pure Python, about
20 µs a record on a small machine. `RawRecords` (a subclass of the fetcher's
``PartitionRecords``, installed on one consumer only) hands out `RawBatch` objects
instead: the v2 record batches as fetched, still as bytes, each with the range of
offsets the consumer has not read yet. They are decoded where the records are
needed, by tight varint loops:

- `RawBatch.records` builds `Record` objects (offsets, timestamps, keys, values,
  headers): what `Consumer.poll` returns;
- `RawBatch.decode` builds three columns (offsets, keys, values) and skips the
  rest: what a `Chunk` holds. Chunks travel to worker processes undecoded
  (`RawBatches` is picklable), so the polling thread does no per-record work.

Everything else stays kafka-python's: fetching, positions, offset resets, leader
changes, and read_committed (aborted transactions are skipped and control batches
dropped exactly as the library does, with its own helpers). Batch checksums are
checked like the library does (``check_crcs``, one CRC-32C per batch).

This relies on internals of kafka-python 3.0 (``Fetcher.PartitionRecords``, the
fetcher's ``PartitionRecords`` attribute, ``DefaultRecordBatch._buffer``).
`install_raw_records` checks the library's version, its internals, and decodes a
batch built with the library's own builder before switching; when anything does
not match it leaves the consumer as it is and says why.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import kafka
from kafka import codec as codecs
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError, UnsupportedCodecError
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.structs import TopicPartition as KafkaTopicPartition

from bus.clients.base import Columns, Record
from bus.clients.kafka_python_decode import (
    NO_LIMIT,
    CorruptBatchError,
    decode_columns,
    decode_records,
)

SUPPORTED_VERSION = "3.0."  # the kafka-python releases whose internals this was written for

_HEADER_SIZE = DefaultRecordBatch.HEADER_STRUCT.size
_READ_COMMITTED = 1
# a batch's bytes: kafka-python has no public access to them (see the module doc)
_batch_buffer = operator.attrgetter("_buffer")

__all__ = [
    "SUPPORTED_VERSION",
    "CorruptBatchError",
    "RawBatch",
    "RawBatches",
    "RawRecords",
    "decode_columns",
    "decode_records",
    "install_raw_records",
    "raw_batch",
    "self_test",
]


@dataclass(frozen=True, slots=True)
class RawBatch:
    """One v2 record batch as fetched, restricted to offsets ``first_offset <= o < next_offset``.

    ``body`` is the batch's records section (compressed with ``codec``). A batch of
    the old message formats (v0/v1) is kept decoded in ``legacy`` instead, as
    (offset, timestamp, key, value) tuples. ``next_offset`` is where the consumer
    goes on after this batch (past records compaction removed from its end).
    """

    body: bytes
    codec: int
    base_offset: int
    count: int
    contiguous: bool  # offset deltas are 0, 1, ... count - 1 (nothing compacted away)
    base_timestamp: int
    append_time: int  # the broker's log-append time for every record, or -1 (create time)
    first_offset: int
    next_offset: int
    legacy: tuple[tuple[int, int, bytes | None, bytes | None], ...] | None = None

    def size(self) -> int:
        """How many records the batch holds in its offset range."""
        if self.contiguous and self.legacy is None:
            start = max(self.first_offset, self.base_offset)
            return max(0, min(self.next_offset, self.base_offset + self.count) - start)
        return len(self.offsets())

    def offsets(self) -> list[int]:
        """The offsets of the records in range."""
        if self.legacy is not None:
            return [o for o, _, _, _ in self.legacy if self.first_offset <= o < self.next_offset]
        return self.decode()[0]

    def split(self, n: int) -> tuple[RawBatch, RawBatch]:
        """The first ``n`` records in range, and the rest (``0 < n < size()``)."""
        if self.contiguous and self.legacy is None:
            cut = max(self.first_offset, self.base_offset) + n
        else:
            cut = self.offsets()[n]
        return replace(self, next_offset=cut), replace(self, first_offset=cut)

    def decode(self) -> Columns:
        """Offsets, keys and values of the records in range."""
        if self.legacy is not None:
            rows = [r for r in self.legacy if self.first_offset <= r[0] < self.next_offset]
            return [r[0] for r in rows], [r[2] for r in rows], [r[3] for r in rows]
        try:
            return decode_columns(
                _decompress(self.body, self.codec),
                self.base_offset,
                self.count,
                self.first_offset,
                self.next_offset,
                contiguous=self.contiguous,
            )
        except (IndexError, CorruptBatchError) as exc:
            raise CorruptRecordError(f"record batch at offset {self.base_offset}: {exc}") from exc

    def records(self, topic: str, partition: int) -> list[Record]:
        """The records in range as `Record` objects (timestamps and headers included)."""
        if self.legacy is not None:
            return [
                Record(topic, partition, o, k, v, t)
                for o, t, k, v in self.legacy
                if self.first_offset <= o < self.next_offset
            ]
        try:
            return decode_records(self, _decompress(self.body, self.codec), topic, partition)
        except (IndexError, CorruptBatchError) as exc:
            raise CorruptRecordError(f"record batch at offset {self.base_offset}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class RawBatches:
    """The still-encoded payload of one `Chunk`: consecutive batches of one partition."""

    batches: tuple[RawBatch, ...]

    def decode(self) -> Columns:
        """Offsets, keys and values of every record, in offset order."""
        if len(self.batches) == 1:
            return self.batches[0].decode()
        offsets: list[int] = []
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        for batch in self.batches:
            batch_offsets, batch_keys, batch_values = batch.decode()
            offsets += batch_offsets
            keys += batch_keys
            values += batch_values
        return offsets, keys, values


def _decompress(body: bytes, codec: int) -> bytes:
    if codec == DefaultRecordBatch.CODEC_NONE:
        return body
    decoders = {
        DefaultRecordBatch.CODEC_GZIP: (codecs.has_gzip, codecs.gzip_decode),
        DefaultRecordBatch.CODEC_SNAPPY: (codecs.has_snappy, codecs.snappy_decode),
        DefaultRecordBatch.CODEC_LZ4: (codecs.has_lz4, codecs.lz4_decode),
        DefaultRecordBatch.CODEC_ZSTD: (codecs.has_zstd, codecs.zstd_decode),
    }
    if codec not in decoders or not decoders[codec][0]():
        raise UnsupportedCodecError(f"compression codec {codec} is not available")
    return bytes(decoders[codec][1](body))


def raw_batch(batch: DefaultRecordBatch, first_offset: int) -> RawBatch:
    """The undecoded records of a v2 batch at or after ``first_offset``."""
    body = bytes(memoryview(_batch_buffer(batch))[_HEADER_SIZE:])
    append_time = batch.max_timestamp if batch.timestamp_type == batch.LOG_APPEND_TIME else -1
    return RawBatch(
        body,
        batch.compression_type,
        batch.base_offset,
        batch.records_count,
        batch.last_offset_delta == batch.records_count - 1,
        batch.first_timestamp,
        append_time,
        first_offset,
        batch.next_offset,
    )


class _Taken(list):  # type: ignore[type-arg]
    """Batches taken from one partition; its length is their record count.

    The fetcher counts ``len(taken)`` against ``max_records``, and copies the items
    (the batches) into what ``poll`` returns.
    """

    __slots__ = ("record_count",)

    def __init__(self) -> None:
        super().__init__()
        self.record_count = 0

    def __len__(self) -> int:
        return self.record_count


class RawRecords(Fetcher.PartitionRecords):  # type: ignore[misc]
    """The fetched records of one partition, handed out as `RawBatch`es or as `Record`s.

    A consumer's own subclass sets ``chunk_mode`` before each poll: True, ``take(n)``
    returns batches holding ``n`` records at most (a batch is cut if needed); False,
    it returns ``n`` `Record`s at most.
    """

    chunk_mode = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._leftover: RawBatch | None = None
        super().__init__(*args, **kwargs)

    def _maybe_skip_record(self, item: Any) -> bool:
        return False  # records before the fetch offset are dropped by the batches' ranges

    def _unpack_records(
        self,
        tp: KafkaTopicPartition,
        records: MemoryRecords,
        key_deserializer: Any,
        value_deserializer: Any,
    ) -> Iterator[RawBatch]:
        """Yield the batches to hand out; skip aborted and control batches as the library does."""
        batch = records.next_batch()
        last = None
        while batch is not None:
            last = batch
            if self.check_crcs and not batch.validate_crc():
                raise CorruptRecordError(
                    f"record batch for partition {tp} at offset {batch.base_offset} "
                    "failed its CRC check"
                )
            if batch.magic != 2:  # message format v0/v1: the library's decoding
                items = tuple(
                    (r.offset, r.timestamp, r.key, r.value)
                    for r in batch
                    if r.offset >= self.fetch_offset
                )
                if items:
                    yield RawBatch(b"", 0, items[0][0], len(items), False, 0, -1,
                                   items[0][0], items[-1][0] + 1, items)  # fmt: skip
                batch = records.next_batch()
                continue
            self.leader_epoch = batch.leader_epoch
            if self.isolation_level == _READ_COMMITTED and batch.has_producer_id():
                self._consume_aborted_transactions_up_to(batch.last_offset)
                if self._contains_abort_marker(batch):
                    self.aborted_producer_ids.discard(batch.producer_id)
                elif self._is_batch_aborted(batch):
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
            if batch.is_control_batch:
                self.next_fetch_offset = batch.next_offset
                batch = records.next_batch()
                continue
            self.records_read += batch.records_count
            self.bytes_read += batch.size_in_bytes
            if batch.next_offset > self.fetch_offset:
                yield raw_batch(batch, self.fetch_offset)
            self.next_fetch_offset = batch.next_offset
            batch = records.next_batch()
        if last is not None and last.magic == 2:
            self.next_fetch_offset = last.next_offset
        self.drain()

    def _next_batch(self) -> RawBatch | None:
        if self._leftover is not None:
            batch, self._leftover = self._leftover, None
            return batch
        if self.record_iterator is None:
            return None
        try:
            return next(self.record_iterator)  # type: ignore[no-any-return]
        except StopIteration:
            return None

    def take(self, n: int | None = None) -> list[Any]:
        """At most ``n`` records of this partition: batches in chunk mode, else `Record`s."""
        self._maybe_raise_next_inline_exception()
        budget = NO_LIMIT if n is None else n
        chunk_mode = self.chunk_mode
        batches = _Taken()
        records: list[Record] = []
        tp = self.topic_partition
        while budget > 0:
            try:
                batch = self._next_batch()
            except Exception as exc:
                if not (batches or records):
                    raise
                self._next_inline_exception = exc
                break
            if batch is None:
                break
            size = batch.size()
            if size > budget:
                batch, self._leftover = batch.split(budget)
                size = budget
            if size:
                if chunk_mode:
                    batches.append(batch)
                    batches.record_count += size
                else:
                    records += batch.records(tp.topic, tp.partition)
                budget -= size
            self.next_fetch_offset = batch.next_offset
        return batches if chunk_mode else records

    def drain(self) -> None:
        """Forget what is left (also the rest of a cut batch)."""
        self._leftover = None
        super().drain()

    def __bool__(self) -> bool:
        return self.record_iterator is not None or self._leftover is not None


def self_test() -> None:
    """Decode a batch built by kafka-python's own builder both ways; raise if anything differs."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    rows: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = [
        (None, b'{"id":"a","x":[1.5],"y":2}', []),
        (b"key", b"x" * 300, [("h", b"v"), ("h2", None)]),
        (b"k" * 200, None, []),
        (None, b"", [("\u00e9t\u00e9", b"\x00" * 130)]),
    ]
    for i, (key, value, headers) in enumerate(rows):
        builder.append(i * 70, timestamp=1_700_000_000_000 + i * 99_999, key=key, value=value,
                       headers=headers)  # fmt: skip
    raw = bytes(builder.build())
    batch = MemoryRecords(raw).next_batch()
    library = [
        (r.offset, r.timestamp, r.key, r.value, list(r.headers))
        for r in MemoryRecords(raw).next_batch()
    ]
    assert isinstance(batch, DefaultRecordBatch)
    ours = raw_batch(batch, 0)
    got = [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in ours.records("t", 0)]
    if got != library:
        raise AssertionError(f"decoded {got!r}, the library decoded {library!r}")
    columns = ours.decode()
    want = ([r[0] for r in library], [r[2] for r in library], [r[3] for r in library])
    if columns != want:
        raise AssertionError(f"decoded columns {columns!r}, expected {want!r}")
    for name in ("_consume_aborted_transactions_up_to", "_contains_abort_marker",
                 "_is_batch_aborted", "_maybe_raise_next_inline_exception", "drain"):  # fmt: skip
        if not callable(getattr(Fetcher.PartitionRecords, name, None)):
            raise AssertionError(f"kafka-python's PartitionRecords has no {name}()")


def install_raw_records(consumer: Any) -> type[RawRecords] | str:
    """Make ``consumer`` hand out raw batches; its `RawRecords` class, or why not.

    Only this consumer is changed (an attribute of its fetcher), never the library.
    """
    version = getattr(kafka, "__version__", "?")
    if not version.startswith(SUPPORTED_VERSION):
        return f"written for kafka-python {SUPPORTED_VERSION}x, found {version}"
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "PartitionRecords"):
        return "kafka-python's consumer has no fetcher with a PartitionRecords class"
    try:
        self_test()
    except Exception as exc:
        return f"the self-test failed: {exc}"
    records_class = type("ConsumerRawRecords", (RawRecords,), {"chunk_mode": False})
    fetcher.PartitionRecords = records_class
    return records_class
