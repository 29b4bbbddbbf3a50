"""Dead letters: the original bytes with their origin, and cut to fit the broker's limit."""

from __future__ import annotations

import pytest

from bus.clients.base import Record
from bus.clients.memory import MemoryBroker
from bus.deadletter import (
    MAX_DEADLETTER_BYTES,
    MAX_REASON_BYTES,
    RECORD_OVERHEAD,
    DeadLetters,
    deadletter_headers,
)

MIB = 1024 * 1024


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic("deadletter")
    return broker


def letters(broker: MemoryBroker, **options: int) -> DeadLetters:
    # the broker's default limit (message.max.bytes) is just over 1 MiB
    producer = broker.driver().producer(max_request_size=MIB, **options)
    return DeadLetters(producer, "deadletter", "scorer")


def record(value: bytes | None, key: bytes | None = b"the-key", offset: int = 42) -> Record:
    return Record("points", 3, offset, key, value, 1700000000000, (("trace", b"t"),))


def size(letter: Record) -> int:
    headers = sum(len(k) + len(v) + 8 for k, v in letter.headers)
    return len(letter.key or b"") + len(letter.value or b"") + headers + RECORD_OVERHEAD


def test_a_dead_letter_is_the_original_bytes_with_its_origin(broker: MemoryBroker) -> None:
    sender = letters(broker)
    sender.send(record(b'{"id": 1, "x": "abc"}'), "field 'x': expected an array")
    (letter,) = broker.records("deadletter")
    assert (letter.key, letter.value) == (b"the-key", b'{"id": 1, "x": "abc"}')
    assert list(letter.headers) == [
        ("error", b"field 'x': expected an array"),
        ("source-topic", b"points"),
        ("source-partition", b"3"),
        ("source-offset", b"42"),
        ("service", b"scorer"),
    ]
    assert sender.count == 1
    assert sender.truncated == 0


def test_a_record_without_key_or_value_is_sent_with_an_empty_value(
    broker: MemoryBroker,
) -> None:
    letters(broker).send(record(None, key=None), "empty")
    assert broker.records("deadletter")[0].value == b""
    letters(broker).send(record(None, key=b"k"), "tombstone")
    assert broker.records("deadletter")[1].value is None


def test_the_reason_is_clipped_without_splitting_a_character() -> None:
    headers = dict(deadletter_headers(record(b"v"), "é" * 5000, "trainer"))
    assert len(headers["error"]) <= MAX_REASON_BYTES
    assert headers["error"].decode() == "é" * (MAX_REASON_BYTES // 2)


def test_a_dead_letter_too_large_for_the_broker_is_cut_to_fit(broker: MemoryBroker) -> None:
    original = bytes(range(256)) * 8000  # 2,048,000 bytes
    sender = letters(broker)
    sender.send(record(original), "MessageError: too many features")
    (letter,) = broker.records("deadletter")
    assert size(letter) <= MAX_DEADLETTER_BYTES
    assert size(letter) > MAX_DEADLETTER_BYTES - 100  # as much of the value as fits
    assert letter.key == b"the-key"
    assert letter.value is not None and original.startswith(letter.value)
    assert letter.header("truncated") == b"true"
    assert letter.header("original-size") == b"2048000"
    error = (letter.header("error") or b"").decode()
    assert error.startswith("MessageError: too many features (dead letter cut to fit")
    assert f"value of 2048000 bytes truncated to {len(letter.value)}" in error
    assert letter.header("source-offset") == b"42"
    assert sender.truncated == 1


@pytest.mark.parametrize("limit", [1000, 5000, 100_000])
def test_cutting_fits_any_limit(broker: MemoryBroker, limit: int) -> None:
    sender = letters(broker)
    sender.max_bytes = limit
    sender.send(record(b"v" * 200_000), "bad")
    sender.send(record(b"v" * 10), "small")
    cut, kept = broker.records("deadletter")
    assert size(cut) <= limit
    assert cut.header("truncated") == b"true"
    assert kept.value == b"v" * 10
    assert kept.header("truncated") is None


def test_a_key_over_the_limit_is_cut_too(broker: MemoryBroker) -> None:
    sender = letters(broker)
    sender.max_bytes = 2000
    sender.send(record(b"value", key=b"k" * 5000), "huge key")
    (letter,) = broker.records("deadletter")
    assert size(letter) <= 2000
    assert letter.value == b""
    assert letter.key and letter.key != b"k" * 5000 and (b"k" * 5000).startswith(letter.key)
