"""The kafka-python driver's fast fetch (raw record batches), against batches of kafka-python."""

from __future__ import annotations

import pickle
import struct
from collections import namedtuple
from dataclasses import replace
from typing import Any

import kafka
import pytest
from kafka import errors as kerr
from kafka.consumer.fetcher import Fetcher
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.record.util import calc_crc32c
from kafka.structs import TopicPartition as KafkaTopicPartition

from bus.clients.base import Chunk, Record
from bus.clients.kafka_python_fetch import (
    RawBatch,
    RawBatches,
    RawRecords,
    decode_columns,
    install_raw_records,
    raw_batch,
    self_test,
)

AbortedTxn = namedtuple("AbortedTxn", "producer_id first_offset")
TP = KafkaTopicPartition("points", 2)
Row = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]


def _batch(
    base: int,
    rows: list[Row],
    *,
    codec: int = 0,
    pid: int = -1,
    transactional: bool = False,
    control: bool = False,
    offset_step: int = 1,
    log_append_time: int | None = None,
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
    for i, (key, value, headers) in enumerate(rows):
        builder.append(i * offset_step, timestamp=1_000 + 7 * i, key=key, value=value,
                       headers=headers)  # fmt: skip
    raw = bytearray(builder.build())
    header = list(DefaultRecordBatch.HEADER_STRUCT.unpack_from(raw))
    header[0] = base  # base offset
    if control:
        header[5] |= DefaultRecordBatch.CONTROL_MASK  # attributes
    if log_append_time is not None:
        header[5] |= DefaultRecordBatch.TIMESTAMP_TYPE_MASK
        header[8] = log_append_time  # max timestamp
    DefaultRecordBatch.HEADER_STRUCT.pack_into(raw, 0, *header)
    crc = calc_crc32c(memoryview(raw)[DefaultRecordBatch.ATTRIBUTES_OFFSET :])
    struct.pack_into(">I", raw, DefaultRecordBatch.CRC_OFFSET, crc)
    return bytes(raw)


def _marker(base: int, pid: int, *, commit: bool) -> bytes:
    key = struct.pack(">hh", 0, 1 if commit else 0)
    return _batch(base, [(key, b"\x00\x00\x00\x00\x00\x00", [])], pid=pid, transactional=True,
                  control=True)  # fmt: skip


def _raw(raw: bytes, first_offset: int = 0) -> RawBatch:
    batch = MemoryRecords(raw).next_batch()
    assert isinstance(batch, DefaultRecordBatch)
    return raw_batch(batch, first_offset)


def _library(raw: bytes) -> list[tuple[int, int, bytes | None, bytes | None, list[Any]]]:
    return [
        (r.offset, r.timestamp, r.key, r.value, list(r.headers))
        for r in MemoryRecords(raw).next_batch()
    ]


def _ours(records: list[Record]) -> list[tuple[int, int, bytes | None, bytes | None, list[Any]]]:
    return [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in records]


ROWS: list[Row] = [
    (None, b'{"id":"a"}', []),
    (b"k", b"v" * 200, [("h", b"x"), ("empty", b""), ("none", None)]),  # two-byte varints
    (b"K" * 20_000, b"V" * 70_000, [("\u00e9", b"\xff" * 300)]),  # three-byte varints
    (None, None, []),
    (b"", b"", []),
]


def test_the_self_test_passes_with_the_installed_kafka_python() -> None:
    self_test()
    assert kafka.__version__.startswith("3.0.")


@pytest.mark.parametrize("codec", [0, 1], ids=["none", "gzip"])
def test_records_and_columns_match_the_library(codec: int) -> None:
    raw = _batch(1_000_000, ROWS, codec=codec)
    library = _library(raw)
    batch = _raw(raw)
    assert _ours(batch.records("points", 2)) == library
    assert all(type(r) is Record and r.topic == "points" for r in batch.records("points", 2))
    offsets, keys, values = batch.decode()
    assert offsets == [r[0] for r in library] == list(range(1_000_000, 1_000_005))
    assert keys == [r[2] for r in library]
    assert values == [r[3] for r in library]


def test_log_append_time_gives_every_record_the_brokers_time() -> None:
    raw = _batch(0, ROWS[:2], log_append_time=1_700_000_000_123)
    assert [r.timestamp for r in _raw(raw).records("t", 0)] == [1_700_000_000_123] * 2
    assert [r[1] for r in _library(raw)] == [1_700_000_000_123] * 2


def test_compacted_batches_keep_their_offset_gaps_and_can_be_cut() -> None:
    raw = _batch(10, [(b"a", b"1", []), (b"b", b"2", []), (b"c", b"3", [])], offset_step=5)
    batch = _raw(raw)
    assert not batch.contiguous
    assert batch.decode()[0] == [10, 15, 20]
    assert [r.offset for r in batch.records("t", 0)] == [10, 15, 20]
    head, tail = batch.split(2)
    assert (head.decode()[0], tail.decode()[0]) == ([10, 15], [20])
    assert (head.size(), tail.size(), head.next_offset) == (2, 1, 20)  # the gap goes with it
    assert [r.offset for r in tail.records("t", 0)] == [20]


def test_a_contiguous_batch_is_cut_by_offset_without_decoding() -> None:
    batch = _raw(_batch(100, [(None, b"%d" % i, []) for i in range(10)]), first_offset=102)
    assert batch.size() == 8
    head, tail = batch.split(3)
    assert head.decode() == ([102, 103, 104], [None] * 3, [b"2", b"3", b"4"])
    assert [r.value for r in tail.records("t", 0)] == [b"%d" % i for i in range(5, 10)]
    assert head.next_offset == tail.first_offset == 105


def test_a_truncated_batch_is_a_corrupt_record_error() -> None:
    good = _raw(_batch(0, [(None, b"x" * 50, [])] * 3))
    with pytest.raises((IndexError, ValueError)):
        decode_columns(good.body[:-10], 0, 3)
    for body in (good.body[:-10], good.body + b"\x00"):
        broken = replace(good, body=body)
        with pytest.raises(kerr.CorruptRecordError):
            broken.decode()
        with pytest.raises(kerr.CorruptRecordError):
            broken.records("t", 0)


def _raw_records(
    raw: bytes, fetch_offset: int, aborted: list[Any], *, chunk_mode: bool, check_crcs: bool = False
) -> Any:
    cls = type("Raw", (RawRecords,), {"chunk_mode": chunk_mode})
    return cls(
        fetch_offset,
        TP,
        MemoryRecords(raw),
        key_deserializer=None,
        value_deserializer=None,
        check_crcs=check_crcs,
        isolation_level=1,  # read_committed
        aborted_transactions=aborted,
        metric_aggregator=None,
        on_drain=lambda _: None,
    )


TXN_LOG = b"".join(
    [
        _batch(0, [(None, b"a%d" % i, []) for i in range(3)], pid=7, transactional=True),
        _marker(3, 7, commit=False),
        _batch(4, [(None, b"c4", []), (None, b"c5", []), (None, b"c6", [])]),
        _batch(7, [(None, b"d7", []), (None, b"d8", [])], pid=8, transactional=True),
        _marker(9, 8, commit=True),
    ]
)
ABORTED = [AbortedTxn(7, 0)]


def test_raw_records_skip_aborted_and_control_batches_like_the_library() -> None:
    library = Fetcher.PartitionRecords(
        0, TP, MemoryRecords(TXN_LOG), check_crcs=False, isolation_level=1,
        aborted_transactions=ABORTED,
    )  # fmt: skip
    expected = [(r.offset, r.value) for r in library.take()]
    assert expected == [(4, b"c4"), (5, b"c5"), (6, b"c6"), (7, b"d7"), (8, b"d8")]

    records = _raw_records(TXN_LOG, 0, ABORTED, chunk_mode=False, check_crcs=True)
    got: list[Record] = []
    while records:
        got += records.take(2)
    assert [(r.offset, r.value) for r in got] == expected
    assert records.next_fetch_offset == 10  # past the commit marker

    chunks = _raw_records(TXN_LOG, 0, ABORTED, chunk_mode=True)
    taken = []
    while chunks:
        part = chunks.take(4)
        assert len(part) <= 4  # the fetcher counts records, not batches
        taken.append(part)
    columns = [RawBatches(tuple(part)).decode() for part in taken if part]
    assert [
        (o, v) for offsets, _, values in columns for o, v in zip(offsets, values, strict=True)
    ] == expected
    assert [len(part) for part in taken if part] == [4, 1]  # the 4th record cut a batch
    assert chunks.next_fetch_offset == 10


def test_raw_records_drop_records_before_the_fetch_offset() -> None:
    raw = _batch(100, [(None, b"%d" % i, []) for i in range(5)], codec=1)
    records = _raw_records(raw, 103, [], chunk_mode=False)
    assert [(r.offset, r.value) for r in records.take(100)] == [(103, b"3"), (104, b"4")]
    assert records.next_fetch_offset == 105
    assert not records.take(100)


def test_raw_records_check_batch_crcs_when_asked() -> None:
    raw = bytearray(_batch(0, [(None, b"payload", [])]))
    raw[-3] ^= 0xFF
    with pytest.raises(kerr.CorruptRecordError, match="CRC"):
        _raw_records(bytes(raw), 0, [], chunk_mode=False, check_crcs=True).take(10)
    assert _raw_records(bytes(raw), 0, [], chunk_mode=False).take(10)  # not asked: not checked


def test_chunks_travel_to_other_processes_undecoded() -> None:
    raw = _batch(0, [(None, b"%d" % i, []) for i in range(3)])
    payload = RawBatches(tuple(_raw_records(raw, 0, [], chunk_mode=True).take(10)))
    chunk = Chunk("points", 2, 3, payload)
    copy = pickle.loads(pickle.dumps(chunk))
    assert isinstance(copy.payload, RawBatches)
    assert copy.columns() == ([0, 1, 2], [None, None, None], [b"0", b"1", b"2"])


def test_install_says_why_it_cannot_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoFetcher:
        pass

    assert "no fetcher" in str(install_raw_records(NoFetcher()))
    monkeypatch.setattr(kafka, "__version__", "4.1.0")
    assert "found 4.1.0" in str(install_raw_records(NoFetcher()))


def test_install_changes_only_the_consumer_it_is_given() -> None:
    class Fetcherish:
        PartitionRecords = Fetcher.PartitionRecords

    fetcher = Fetcherish()

    class Consumerish:
        def __init__(self) -> None:
            self._fetcher = fetcher  # where kafka-python's consumer keeps it

    installed = install_raw_records(Consumerish())
    assert isinstance(installed, type) and issubclass(installed, RawRecords)
    assert fetcher.PartitionRecords is installed
    assert Fetcherish.PartitionRecords is Fetcher.PartitionRecords
