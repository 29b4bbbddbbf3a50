"""The trainer's record-batch decoding against batches built by kafka-python itself."""

from __future__ import annotations

import struct
from collections import namedtuple
from typing import Any

import pytest
from kafka.consumer.fetcher import Fetcher
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.structs import TopicPartition

from trainer.fetch import Chunk, FastRecords, _self_test, decode_batch, raw_batch

AbortedTxn = namedtuple("AbortedTxn", "producer_id first_offset")
TP = TopicPartition("points", 2)


def _batch(
    base: int,
    records: list[tuple[bytes | None, bytes | None]],
    *,
    codec: int = 0,
    pid: int = -1,
    transactional: bool = False,
    control: bool = False,
    offset_step: int = 1,
) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=transactional,
        producer_id=pid,
        producer_epoch=0 if pid >= 0 else -1,
        base_sequence=0 if pid >= 0 else -1,
        batch_size=1 << 22,
    )
    for i, (key, value) in enumerate(records):
        builder.append(i * offset_step, timestamp=1_000 + i, key=key, value=value, headers=[])
    raw = bytearray(builder.build())
    struct.pack_into(">q", raw, 0, base)
    if control:
        attrs_at = DefaultRecordBatch.ATTRIBUTES_OFFSET
        (attrs,) = struct.unpack_from(">h", raw, attrs_at)
        struct.pack_into(">h", raw, attrs_at, attrs | DefaultRecordBatch.CONTROL_MASK)
    return bytes(raw)


def _marker(base: int, pid: int, *, commit: bool) -> bytes:
    key = struct.pack(">hh", 0, 1 if commit else 0)
    return _batch(base, [(key, b"\x00\x00\x00\x00\x00\x00")], pid=pid, transactional=True,
                  control=True)  # fmt: skip


def _decoded(raw: bytes) -> tuple[list[int], list[bytes | None], list[bytes | None]]:
    return raw_batch(MemoryRecords(raw).next_batch(), 0).decode()


def test_self_test_passes_with_the_installed_kafka_python() -> None:
    _self_test()


@pytest.mark.parametrize("codec", [0, 1], ids=["none", "gzip"])
def test_decode_matches_the_library(codec: int) -> None:
    records: list[tuple[bytes | None, bytes | None]] = [
        (None, b'{"id":"a"}'),
        (b"k", b"v" * 200),  # two-byte length varints
        (b"K" * 20_000, b"V" * 70_000),  # three-byte varints
        (None, None),
        (b"", b""),
    ]
    raw = _batch(1_000_000, records, codec=codec)
    offsets, keys, values = _decoded(raw)
    library = list(MemoryRecords(raw).next_batch())
    assert offsets == [r.offset for r in library] == list(range(1_000_000, 1_000_005))
    assert keys == [r.key for r in library]
    assert values == [r.value for r in library]


def test_decode_keeps_offset_gaps_of_compacted_batches() -> None:
    offsets, _, _ = _decoded(_batch(10, [(b"a", b"1"), (b"b", b"2")], offset_step=5))
    assert offsets == [10, 15]


def test_decode_rejects_a_truncated_batch() -> None:
    body = raw_batch(MemoryRecords(_batch(0, [(None, b"x" * 50)] * 3)).next_batch(), 0).body
    with pytest.raises((IndexError, ValueError)):
        decode_batch(body[:-10], 0, 3)
    with pytest.raises((IndexError, ValueError)):
        decode_batch(body + b"\x00", 0, 3)


def _fast_records(raw: bytes, fetch_offset: int, aborted: list[Any], chunk: int) -> Any:
    cls = type("Fast", (FastRecords,), {"chunk_records": chunk})
    return cls(
        fetch_offset,
        TP,
        MemoryRecords(raw),
        key_deserializer=None,
        value_deserializer=None,
        check_crcs=False,
        isolation_level=1,  # read_committed
        aborted_transactions=aborted,
        metric_aggregator=None,
        on_drain=lambda _: None,
    )


def test_fast_records_skip_aborted_and_control_batches_like_the_library() -> None:
    raw = b"".join(
        [
            _batch(0, [(None, b"a0"), (None, b"a1"), (None, b"a2")], pid=7, transactional=True),
            _marker(3, 7, commit=False),
            _batch(4, [(None, b"c4"), (None, b"c5"), (None, b"c6")]),
            _batch(7, [(None, b"d7"), (None, b"d8")], pid=8, transactional=True),
            _marker(9, 8, commit=True),
        ]
    )
    aborted = [AbortedTxn(7, 0)]
    library = Fetcher.PartitionRecords(
        0, TP, MemoryRecords(raw), check_crcs=False, isolation_level=1,
        aborted_transactions=aborted,
    )  # fmt: skip
    expected = [(r.offset, r.value) for r in library.take()]
    assert expected == [(4, b"c4"), (5, b"c5"), (6, b"c6"), (7, b"d7"), (8, b"d8")]

    fast = _fast_records(raw, 0, aborted, chunk=2)
    chunks: list[Chunk] = []
    while fast:
        chunks += fast.take(1)
    got = [(o, v) for c in chunks for o, _, v in zip(*c.columns(), strict=True)]
    assert got == expected
    assert [len(c) for c in chunks] == [3, 2]  # whole batches, at least `chunk` records each
    assert chunks[0].next_offset == 7
    assert fast.next_fetch_offset == 10  # past the commit marker


def test_fast_records_drop_records_before_the_fetch_offset() -> None:
    raw = _batch(100, [(None, b"%d" % i) for i in range(5)], codec=1)
    fast = _fast_records(raw, 103, [], chunk=100)
    (chunk,) = fast.take(1)
    assert chunk.columns()[0] == [103, 104]
    assert chunk.values == [b"3", b"4"]
    assert chunk.next_offset == 105
    assert not fast.take(1)


def test_chunks_travel_to_other_processes_undecoded() -> None:
    import pickle

    raw = _batch(0, [(None, b"%d" % i) for i in range(3)])
    (chunk,) = _fast_records(raw, 0, [], chunk=100).take(1)
    assert chunk.decoded is None
    copy = pickle.loads(pickle.dumps(chunk))
    assert copy.values == [b"0", b"1", b"2"]
    assert len(chunk) == 3


def test_chunk_record_rebuilds_a_consumer_record() -> None:
    chunk = Chunk("points", 1, 7, [], ([5, 6], [None, b"k"], [b"v", None]))
    record = chunk.record(1)
    assert (record.topic, record.partition, record.offset, record.key, record.value) == (
        "points",
        1,
        6,
        b"k",
        None,
    )
