"""Reading record batches as columns, without kafka-python's per-record objects.

kafka-python decodes every record into a ``ConsumerRecord`` in pure Python, about
20 µs a record on a small machine: five times the trainer's whole budget. The
trainer needs only each record's offset, key and value, so `FastRecords` (a
subclass of the fetcher's ``PartitionRecords``, installed on one consumer only)
hands out `Chunk` objects: whole record batches of one partition, about
``chunk_records`` records, still as bytes. `decode_batch` walks a batch with a
tight varint loop into three lists (offsets, keys, values), wherever the records
are needed: in the trainer's parsing workers, so the polling thread does no
per-record work at all.

Reading the batch's bytes uses one private attribute of kafka-python's
``DefaultRecordBatch`` (``_buffer``); everything else is public API.

Everything else stays kafka-python's: fetching, positions, offset resets, leader
changes, and read_committed (aborted transactions are skipped and control batches
dropped exactly as the library does, with its own helpers). CRCs are not checked
(``check_crcs`` costs ~50 µs a record in pure Python); the broker validates them
on write. `install_fast_records` checks the library against a record batch built
with its own builder before switching, and leaves the consumer as it is, on the
ordinary (slower) path, if anything does not match.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer
from kafka import codec as codecs
from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.errors import CorruptRecordError, UnsupportedCodecError
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.structs import TopicPartition

log = logging.getLogger(__name__)

_HEADER_SIZE = DefaultRecordBatch.HEADER_STRUCT.size
_READ_COMMITTED = 1


Columns = tuple[list[int], list[bytes | None], list[bytes | None]]  # offsets, keys, values


class CorruptBatchError(ValueError):
    """A record batch whose records do not add up to its length."""


@dataclass(frozen=True, slots=True)
class RawBatch:
    """One v2 record batch as fetched: its records' bytes, not decoded yet.

    Decoding (and decompressing) is left to whoever needs the records, which may be
    a worker process: bytes travel cheaply between processes, per-record objects do not.
    """

    body: bytes
    codec: int
    base_offset: int
    count: int
    first_offset: int  # records before it were read already (a fetch from inside the batch)
    columns: Columns | None = None  # already decoded (message format v0/v1)
    last_offset_delta: int = -1

    def decode(self) -> Columns:
        """Offsets, keys and values of the records at or after ``first_offset``."""
        if self.columns is not None:
            return self.columns
        try:
            offsets, keys, values = decode_batch(
                _decompress(self.body, self.codec),
                self.base_offset,
                self.count,
                contiguous=self.last_offset_delta == self.count - 1,
            )
        except (IndexError, CorruptBatchError) as exc:
            raise CorruptRecordError(f"record batch at offset {self.base_offset}: {exc}") from exc
        if offsets and offsets[0] < self.first_offset:
            first = next((i for i, o in enumerate(offsets) if o >= self.first_offset), len(offsets))
            offsets, keys, values = offsets[first:], keys[first:], values[first:]
        return offsets, keys, values


@dataclass(slots=True)
class Chunk:
    """Consecutive records of one partition, decoded on first use.

    ``next_offset`` is the position after the chunk (past any control records).
    """

    topic: str
    partition: int
    next_offset: int
    batches: list[RawBatch]
    decoded: Columns | None = None

    def columns(self) -> Columns:
        """Offsets, keys and values of every record (decoded once)."""
        if self.decoded is None:
            offsets: list[int] = []
            keys: list[bytes | None] = []
            values: list[bytes | None] = []
            for batch in self.batches:
                batch_offsets, batch_keys, batch_values = batch.decode()
                offsets += batch_offsets
                keys += batch_keys
                values += batch_values
            self.decoded = offsets, keys, values
        return self.decoded

    @property
    def values(self) -> list[bytes | None]:
        """The records' values."""
        return self.columns()[2]

    def __len__(self) -> int:
        return len(self.columns()[0])

    def record(self, index: int) -> ConsumerRecord:
        """The record at ``index`` as a ConsumerRecord (for dead letters)."""
        offsets, keys, values = self.columns()
        key, value = keys[index], values[index]
        return ConsumerRecord(
            self.topic,
            self.partition,
            -1,
            offsets[index],
            -1,
            0,
            key,
            value,
            [],
            None,
            -1 if key is None else len(key),
            -1 if value is None else len(value),
            -1,
        )

    @classmethod
    def from_records(cls, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> Chunk:
        """A chunk from ordinary ConsumerRecords (the consumer's slow path)."""
        columns = (
            [r.offset for r in records],
            [r.key for r in records],
            [r.value for r in records],
        )
        next_offset = records[-1].offset + 1 if records else -1
        return cls(tp.topic, tp.partition, next_offset, [], columns)


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
    """The undecoded records of a v2 batch."""
    body = bytes(memoryview(batch._buffer)[_HEADER_SIZE:])  # private: see the module doc
    return RawBatch(body, batch.compression_type, batch.base_offset, batch.records_count,
                    first_offset, None, batch.last_offset_delta)  # fmt: skip


def decode_batch(buf: bytes, base_offset: int, count: int, *, contiguous: bool = False) -> Columns:
    """Offsets, keys and values of the ``count`` records in ``buf`` (v2 record format).

    Record := length attributes ts_delta offset_delta key_len key value_len value
    headers, every integer a zigzag varint. Headers and timestamps are skipped; so
    are offset deltas when the batch is ``contiguous`` (its last offset delta is
    ``count - 1``: deltas 0, 1, ... count - 1, as producers write them).
    """
    offsets: list[int] = list(range(base_offset, base_offset + count)) if contiguous else []
    keys: list[bytes | None] = []
    values: list[bytes | None] = []
    add_offset, add_key, add_value = offsets.append, keys.append, values.append
    pos = 0
    for _ in range(count):
        # length
        b = buf[pos]
        pos += 1
        n = b & 0x7F
        shift = 7
        while b > 0x7F:
            b = buf[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
        record_end = pos + ((n >> 1) ^ -(n & 1))
        # attributes (one byte), then the timestamp delta: skipped
        pos += 1
        while buf[pos] > 0x7F:
            pos += 1
        pos += 1
        # offset delta
        if contiguous:
            while buf[pos] > 0x7F:
                pos += 1
            pos += 1
        else:
            b = buf[pos]
            pos += 1
            n = b & 0x7F
            shift = 7
            while b > 0x7F:
                b = buf[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                shift += 7
            add_offset(base_offset + ((n >> 1) ^ -(n & 1)))
        # key
        b = buf[pos]
        pos += 1
        if b == 1:  # zigzag(-1): null key
            add_key(None)
        else:
            n = b & 0x7F
            shift = 7
            while b > 0x7F:
                b = buf[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                shift += 7
            n = (n >> 1) ^ -(n & 1)
            add_key(buf[pos : pos + n])
            pos += n
        # value
        b = buf[pos]
        pos += 1
        n = b & 0x7F
        shift = 7
        while b > 0x7F:
            b = buf[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
        if n & 1:  # negative: only -1 (null) is valid
            if n != 1:
                raise CorruptBatchError(f"record {len(values)} has a negative value length")
            add_value(None)
        else:
            n >>= 1
            add_value(buf[pos : pos + n])
            pos += n
        if pos > record_end:
            raise CorruptBatchError(f"record {len(values) - 1} overruns its length")
        pos = record_end  # headers: skipped
    if pos != len(buf):
        raise CorruptBatchError(f"{len(buf) - pos} bytes left after {count} records")
    return offsets, keys, values


class FastRecords(Fetcher.PartitionRecords):  # type: ignore[misc]
    """The fetched records of one partition, handed out as `Chunk` objects.

    ``take(n)`` returns ``[chunk]`` (one item, whatever ``n``): poll with
    ``max_records=1`` to get one chunk of whole batches, about ``chunk_records``
    records, per poll. The records are not decoded here (see `RawBatch`).
    """

    chunk_records = 5000

    def _maybe_skip_record(self, item: Any) -> bool:
        return False  # records before the fetch offset are dropped in _unpack_records

    def _unpack_records(
        self, tp: TopicPartition, records: MemoryRecords, key_deserializer: Any, value_ds: Any
    ) -> Iterator[tuple[RawBatch, int]]:
        """Yield (raw batch, next offset) per record batch, as the library's loop would."""
        batch = records.next_batch()
        last = None
        while batch is not None:
            last = batch
            if batch.magic != 2:  # message format v0/v1: the library's decoding
                items = [r for r in batch if r.offset >= self.fetch_offset]
                if items:
                    columns = (
                        [r.offset for r in items],
                        [r.key for r in items],
                        [r.value for r in items],
                    )
                    next_offset = items[-1].offset + 1
                    self.next_fetch_offset = next_offset
                    yield RawBatch(b"", 0, items[0].offset, len(items), 0, columns), next_offset
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
            if batch.last_offset >= self.fetch_offset:
                yield raw_batch(batch, self.fetch_offset), batch.next_offset
            self.next_fetch_offset = batch.next_offset
            batch = records.next_batch()
        if last is not None and last.magic == 2:
            self.next_fetch_offset = last.next_offset
        self.drain()

    def take(self, n: int | None = None) -> list[Chunk]:
        """Whole batches of at least ``chunk_records`` records (or all there are) as one chunk."""
        self._maybe_raise_next_inline_exception()
        batches: list[RawBatch] = []
        count = 0
        while count < self.chunk_records and self.record_iterator is not None:
            try:
                batch, next_offset = next(self.record_iterator)
            except StopIteration:
                break
            except Exception as exc:
                if not batches:
                    raise
                self._next_inline_exception = exc
                break
            batches.append(batch)
            count += batch.count
            self.next_fetch_offset = next_offset
        if not batches:
            return []
        tp = self.topic_partition
        return [Chunk(tp.topic, tp.partition, self.next_fetch_offset, batches)]


def _self_test() -> None:
    """Decode a batch built by kafka-python's own builder; raise if anything differs."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    expected = [
        (None, b'{"id":"a","x":[1.5],"y":2}', []),
        (b"key", b"x" * 300, [("h", b"v"), ("h2", None)]),
        (b"k" * 200, None, []),
        (None, b"", []),
    ]
    for i, (key, value, headers) in enumerate(expected):
        builder.append(i * 70, timestamp=1_700_000_000_000 + i * 99_999, key=key, value=value,
                       headers=headers)  # fmt: skip
    batch = MemoryRecords(bytes(builder.build())).next_batch()
    assert isinstance(batch, DefaultRecordBatch)
    offsets, keys, values = raw_batch(batch, 0).decode()
    got = list(zip(offsets, keys, values, strict=True))
    want = [(i * 70, key, value) for i, (key, value, _) in enumerate(expected)]
    if got != want:
        raise AssertionError(f"decoded {got!r}, expected {want!r}")
    for name in ("_consume_aborted_transactions_up_to", "_contains_abort_marker",
                 "_is_batch_aborted", "_maybe_raise_next_inline_exception", "drain"):  # fmt: skip
        if not callable(getattr(Fetcher.PartitionRecords, name, None)):
            raise AssertionError(f"kafka-python's PartitionRecords has no {name}()")


def install_fast_records(consumer: KafkaConsumer, chunk_records: int) -> bool:
    """Make ``consumer.poll(max_records=1)`` return `Chunk` lists; False if not possible.

    Only this consumer is changed (an attribute of its fetcher), never the library.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "PartitionRecords"):
        log.warning("kafka-python internals differ: using its ordinary (slower) record decoding")
        return False
    try:
        _self_test()
    except Exception as exc:
        log.warning("fast record decoding disabled (%s): using kafka-python's own decoding", exc)
        return False
    records_class = type("FastRecords", (FastRecords,), {"chunk_records": chunk_records})
    fetcher.PartitionRecords = records_class
    return True


def chunks_of(polled: dict[TopicPartition, list[Any]], fast: bool) -> list[Chunk]:
    """What ``poll`` returned, as chunks, in the order given."""
    if fast:
        return [chunk for items in polled.values() for chunk in items]
    return [Chunk.from_records(tp, records) for tp, records in polled.items() if records]
