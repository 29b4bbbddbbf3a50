"""Decoding Kafka's v2 record batches in tight loops: columns, or `Record` objects.

The record batches `bus.clients.kafka_python_fetch` hands out are decoded here,
where the records are needed. The loops work a batch at a time (no Python call
per record): every zigzag varint is decoded inline. A batch whose offset deltas
are 0, 1, ... count - 1 (as producers write them) is *contiguous*: its offsets
are known without decoding them; one with gaps (compaction) has its offsets
read first, then its records in range decoded the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bus.clients.base import Columns, Record

if TYPE_CHECKING:
    from bus.clients.kafka_python_fetch import RawBatch

NO_LIMIT = sys.maxsize


class CorruptBatchError(ValueError):
    """A record batch whose records do not add up to its length."""


def decode_columns(
    buf: bytes,
    base_offset: int,
    count: int,
    first_offset: int = 0,
    next_offset: int = NO_LIMIT,
    *,
    contiguous: bool = False,
) -> Columns:
    """Offsets, keys and values of the records in ``buf`` (v2 format) within the offset range.

    Record := length attributes ts_delta offset_delta key_len key value_len value
    headers, every integer a zigzag varint. Headers and timestamps are skipped; so
    are offset deltas when the batch is ``contiguous`` (its last offset delta is
    ``count - 1``: deltas 0, 1, ... count - 1, as producers write them).
    """
    keys: list[bytes | None] = []
    values: list[bytes | None] = []
    if contiguous:
        skip = max(0, min(count, first_offset - base_offset))
        stop = max(skip, min(count, next_offset - base_offset))
        offsets = list(range(base_offset + skip, base_offset + stop))
        end = _contiguous_columns(buf, count, skip, stop, keys=keys, values=values)
        if stop < count:
            return offsets, keys, values  # the records after the range are left undecoded
    else:  # offset gaps: the offsets first, then the records in range as if contiguous
        offsets, lo, hi, end = _sparse_offsets(buf, base_offset, count, first_offset, next_offset)
        _contiguous_columns(buf, count, lo, hi, keys=keys, values=values)
    if end != len(buf):
        raise CorruptBatchError(f"{len(buf) - end} bytes left after {count} records")
    return offsets, keys, values


def _contiguous_columns(buf: bytes, count: int, skip: int, stop: int, *,
                        keys: list[bytes | None], values: list[bytes | None]) -> int:  # fmt: skip
    """Add the keys and values of records ``skip <= index < stop``; where the last one ends."""
    add_key, add_value = keys.append, values.append
    pos = _skip_records(buf, skip)
    for index in range(skip, stop):
        n = (b := buf[pos]) & 0x7F  # length
        pos += 1
        shift = 7
        while b > 0x7F:
            n |= ((b := buf[pos]) & 0x7F) << shift
            pos += 1
            shift += 7
        record_end = pos + ((n >> 1) ^ -(n & 1))
        pos += 1  # attributes (one byte), then the timestamp and offset deltas: skipped
        while buf[pos] > 0x7F:
            pos += 1
        pos += 1
        while buf[pos] > 0x7F:
            pos += 1
        pos += 1
        if (b := buf[pos]) == 1:  # key; zigzag(-1): null
            pos += 1
            add_key(None)
        else:
            n = b & 0x7F
            pos += 1
            shift = 7
            while b > 0x7F:
                n |= ((b := buf[pos]) & 0x7F) << shift
                pos += 1
                shift += 7
            n = (n >> 1) ^ -(n & 1)
            add_key(buf[pos : pos + n])
            pos += n
        n = (b := buf[pos]) & 0x7F  # value
        pos += 1
        shift = 7
        while b > 0x7F:
            n |= ((b := buf[pos]) & 0x7F) << shift
            pos += 1
            shift += 7
        if n & 1:  # negative: only -1 (null) is valid
            if n != 1:
                raise CorruptBatchError(f"record {index} has a negative value length")
            add_value(None)
        else:
            n >>= 1
            add_value(buf[pos : pos + n])
            pos += n
        if pos > record_end:
            raise CorruptBatchError(f"record {index} overruns its length")
        pos = record_end  # headers: skipped
    return pos


def _sparse_offsets(
    buf: bytes, base_offset: int, count: int, first_offset: int, next_offset: int
) -> tuple[list[int], int, int, int]:
    """The offsets within range of a batch with offset gaps (offset deltas go up).

    Also the index of the first record in range, of the one after the last, and
    where the last record of the batch ends.
    """
    offsets: list[int] = []
    add_offset = offsets.append
    lo = hi = 0
    pos = 0
    for index in range(count):
        n = (b := buf[pos]) & 0x7F  # length
        pos += 1
        shift = 7
        while b > 0x7F:
            n |= ((b := buf[pos]) & 0x7F) << shift
            pos += 1
            shift += 7
        record_end = pos + ((n >> 1) ^ -(n & 1))
        pos += 1  # attributes (one byte), then the timestamp delta: skipped
        while buf[pos] > 0x7F:
            pos += 1
        n = (b := buf[pos + 1]) & 0x7F  # offset delta
        pos += 2
        shift = 7
        while b > 0x7F:
            n |= ((b := buf[pos]) & 0x7F) << shift
            pos += 1
            shift += 7
        offset = base_offset + ((n >> 1) ^ -(n & 1))
        if offset < first_offset:
            lo = index + 1
        elif offset < next_offset:
            add_offset(offset)
            hi = index + 1
        pos = record_end
    return offsets, lo, max(lo, hi), pos


def decode_records(batch: RawBatch, buf: bytes, topic: str, partition: int) -> list[Record]:
    """The records of ``batch`` (decompressed into ``buf``) in its offset range, as `Record`s."""
    base_offset, count = batch.base_offset, batch.count
    offsets: Sequence[int]
    if batch.contiguous:
        skip = max(0, min(count, batch.first_offset - base_offset))
        stop = max(skip, min(count, batch.next_offset - base_offset))
        offsets = range(base_offset + skip, base_offset + stop)
    else:  # offset gaps: the offsets first, then the records in range
        offsets, skip, stop, end = _sparse_offsets(
            buf, base_offset, count, batch.first_offset, batch.next_offset
        )
    out: list[Record] = []
    pos = _add_records(batch, buf, (topic, partition), skip, offsets, out=out)
    if not batch.contiguous:
        pos = end
    elif stop < count:
        return out  # the records after the range are left undecoded
    if pos != len(buf):
        raise CorruptBatchError(f"{len(buf) - pos} bytes left after {count} records")
    return out


# Add to ``out`` the records at ``offsets`` (the first at index ``skip``); where the last ends.
def _add_records(batch: RawBatch, buf: bytes, where: tuple[str, int], skip: int,
                 offsets: Sequence[int], *, out: list[Record]) -> int:  # fmt: skip
    topic, partition = where
    headers: Any
    base_timestamp, append_time = batch.base_timestamp, batch.append_time
    add = out.append
    pos = _skip_records(buf, skip)
    for index, offset in enumerate(offsets, skip):
        n = (b := buf[pos]) & 0x7F  # length
        pos += 1
        shift = 7
        while b > 0x7F:
            n |= ((b := buf[pos]) & 0x7F) << shift
            pos += 1
            shift += 7
        record_end = pos + ((n >> 1) ^ -(n & 1))
        n = (b := buf[pos + 1]) & 0x7F  # after the attributes (one byte): the timestamp delta
        pos += 2
        shift = 7
        while b > 0x7F:
            n |= ((b := buf[pos]) & 0x7F) << shift
            pos += 1
            shift += 7
        timestamp = append_time if append_time >= 0 else base_timestamp + ((n >> 1) ^ -(n & 1))
        while buf[pos] > 0x7F:  # the offset delta: known already
            pos += 1
        if (b := buf[pos + 1]) == 1:  # key; zigzag(-1): null
            pos += 2
            key = None
        else:
            n = b & 0x7F
            pos += 2
            shift = 7
            while b > 0x7F:
                n |= ((b := buf[pos]) & 0x7F) << shift
                pos += 1
                shift += 7
            n = (n >> 1) ^ -(n & 1)
            key = buf[pos : pos + n]
            pos += n
        n = (b := buf[pos]) & 0x7F  # value; zigzag(-1): null
        pos += 1
        shift = 7
        while b > 0x7F:
            n |= ((b := buf[pos]) & 0x7F) << shift
            pos += 1
            shift += 7
        if n & 1:
            if n != 1:
                raise CorruptBatchError(f"record {index} has a negative value length")
            value = None
        else:
            n >>= 1
            value = buf[pos : pos + n]
            pos += n
        pos, headers = (pos + 1, ()) if buf[pos] == 0 else _decode_headers(buf, pos)
        if pos != record_end:
            raise CorruptBatchError(f"record {index} does not match its length")
        add(Record(topic, partition, offset, key, value, timestamp, headers))
    return pos


def _skip_records(buf: bytes, skip: int) -> int:
    """Where the record after the first ``skip`` records of ``buf`` starts (lengths only)."""
    pos = 0
    for _ in range(skip):
        n = (b := buf[pos]) & 0x7F
        pos += 1
        shift = 7
        while b > 0x7F:
            n |= ((b := buf[pos]) & 0x7F) << shift
            pos += 1
            shift += 7
        pos += (n >> 1) ^ -(n & 1)
    return pos


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint at ``pos``: (value, position after it)."""
    b = buf[pos]
    pos += 1
    n = b & 0x7F
    shift = 7
    while b > 0x7F:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def _decode_headers(buf: bytes, pos: int) -> tuple[int, list[tuple[str, bytes | None]]]:
    count, pos = _varint(buf, pos)
    if count < 0:
        raise CorruptBatchError(f"negative header count {count}")
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        n, pos = _varint(buf, pos)
        if n < 0:
            raise CorruptBatchError(f"negative header name length {n}")
        name = buf[pos : pos + n].decode("utf-8")
        pos += n
        n, pos = _varint(buf, pos)
        if n < 0:
            headers.append((name, None))
        else:
            headers.append((name, buf[pos : pos + n]))
            pos += n
    return pos, headers
