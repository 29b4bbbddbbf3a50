"""Parsing chunks in worker processes gives what parsing in-process gives, in order."""

from __future__ import annotations

import numpy as np
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from bus.messages import Point
from trainer.fetch import Chunk, raw_batch
from trainer.pool import ParsePool, parse_chunk


def _chunk(partition: int, base: int, values: list[bytes]) -> Chunk:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=1 << 22,
    )  # fmt: skip
    for i, value in enumerate(values):
        builder.append(i, timestamp=None, key=b"k", value=value, headers=[])
    raw = bytearray(builder.build())
    raw[:8] = base.to_bytes(8, "big")
    batch = MemoryRecords(bytes(raw)).next_batch()
    return Chunk("points", partition, base + len(values), [raw_batch(batch, base)])


def _values(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = [Point(f"{seed}-{i}", rng.normal(size=2).tolist(), float(i)).to_bytes() for i in range(n)]
    out[n // 2] = b'{"id":"bad","x":[1,2,3],"y":1}'
    return out


def test_workers_parse_like_the_caller_and_keep_the_order() -> None:
    chunks = [_chunk(p, 100 * p, _values(50 + p, seed=p)) for p in range(4)]
    expected = [parse_chunk(c, 2, 1e33, 1e100) for c in chunks]
    pool = ParsePool(1, 1e33, 1e100)
    try:
        futures = [pool.submit(c, 2) for c in chunks]
        results = [f.result(timeout=60) for f in futures]
    finally:
        pool.close()
    for got, want, chunk in zip(results, expected, chunks, strict=True):
        np.testing.assert_array_equal(got.x, want.x)
        np.testing.assert_array_equal(got.y, want.y)
        assert got.records == len(chunk) == want.records
        assert [(r.offset, r.value, reason) for r, reason in got.deadletters] == [
            (r.offset, r.value, reason) for r, reason in want.deadletters
        ]
        assert len(got.deadletters) == 1
        assert got.deadletters[0][0].key == b"k"


def test_unknown_dimension_is_parsed_in_the_caller() -> None:
    pool = ParsePool(1, 1e33, 1e100)
    try:
        future = pool.submit(_chunk(0, 0, _values(10, seed=9)), None)
        assert future.done()
        assert future.result().n_features == 2
    finally:
        pool.close()
