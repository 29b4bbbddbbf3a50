"""Parsing chunks in worker processes gives what parsing in-process gives, in order."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from bus.clients.base import Chunk, Columns
from bus.messages import Point
from trainer.pool import ParsedChunk, ParsePool, parse_chunk


@dataclass(frozen=True)
class Encoded:
    """Records still encoded, as a driver may hand them out: decoded where they are used."""

    base: int
    lines: bytes

    def decode(self) -> Columns:
        values: list[bytes | None] = list(self.lines.split(b"\n"))
        offsets = list(range(self.base, self.base + len(values)))
        return offsets, [b"k"] * len(values), values


@dataclass(frozen=True)
class Packed:
    """Columns kept as a driver's encoded payload would be (picklable, decoded on demand)."""

    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]

    def decode(self) -> Columns:
        return self.offsets, self.keys, self.values


def _values(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = [Point(f"{seed}-{i}", rng.normal(size=2).tolist(), float(i)).to_bytes() for i in range(n)]
    out[n // 2] = b'{"id":"bad","x":[1,2,3],"y":1}'
    return out


def _chunks() -> list[Chunk]:
    chunks = []
    for p in range(4):
        values = _values(50 + p, seed=p)
        base = 100 * p
        if p % 2:
            payload: Columns | Encoded = Encoded(base, b"\n".join(values))
        else:
            payload = (list(range(base, base + len(values))), [b"k"] * len(values), [*values])
        chunks.append(Chunk("points", p, base + len(values), payload))
    return chunks


def test_parse_chunk_gives_arrays_and_the_rejected_records_with_their_offsets() -> None:
    chunk = _chunks()[1]
    parsed = parse_chunk(chunk, 2, 1e33, 1e100)
    assert parsed.records == 51
    assert parsed.x.shape == (50, 2) and parsed.y.shape == (50,)
    ((offset, key, value, reason),) = parsed.rejected
    assert (offset, key, value) == (125, b"k", b'{"id":"bad","x":[1,2,3],"y":1}')
    assert "expected 2 features like the stream, got 3" in reason


def test_workers_parse_like_the_caller_and_keep_the_order() -> None:
    chunks = _chunks()
    expected = [parse_chunk(c, 2, 1e33, 1e100) for c in chunks]
    pool = ParsePool(1, 1e33, 1e100).open()
    try:
        results = list(pool.parse(chunks, 2))
    finally:
        pool.close()
    for got, want in zip(results, expected, strict=True):
        assert isinstance(got, ParsedChunk)
        np.testing.assert_array_equal(got.x, want.x)
        np.testing.assert_array_equal(got.y, want.y)
        assert got.records == want.records
        assert got.rejected == want.rejected
        assert len(got.rejected) == 1


def test_decoded_chunks_stay_in_the_caller_even_with_workers() -> None:
    values: list[bytes | None] = [*_values(40, seed=7)]
    unpicklable = threading.Lock()  # would fail on its way to a worker
    keys: list[Any] = [unpicklable] * len(values)
    chunk = Chunk("points", 0, len(values), (list(range(len(values))), keys, values))
    pool = ParsePool(1, 1e33, 1e100).open()
    try:
        (result,) = pool.parse([chunk], 2)
    finally:
        pool.close()
    assert isinstance(result, ParsedChunk)
    assert result.records == 40 and len(result.rejected) == 1


def test_unknown_dimension_is_learnt_in_the_caller_then_used() -> None:
    chunks = _chunks()
    pool = ParsePool(0, 1e33, 1e100)
    results = [r for r in pool.parse(chunks, None) if isinstance(r, ParsedChunk)]
    assert [r.n_features for r in results] == [2, 2, 2, 2]
    assert all(len(r.rejected) == 1 for r in results)


class Corrupt:
    """Encoded records that cannot be decoded."""

    def decode(self) -> Columns:
        raise ValueError("corrupt record batch")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_parsing_error_comes_in_its_place_and_the_rest_is_parsed(workers: int) -> None:
    chunks = _chunks()
    chunks.insert(2, Chunk("points", 0, 9, Corrupt()))
    pool = ParsePool(workers, 1e33, 1e100).open()
    try:
        results = list(pool.parse(chunks, 2))
    finally:
        pool.close()
    error = results.pop(2)
    assert isinstance(error, ValueError) and str(error) == "corrupt record batch"
    assert [r.records for r in results if isinstance(r, ParsedChunk)] == [50, 51, 52, 53]
