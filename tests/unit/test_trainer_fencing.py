"""A fenced trainer is recognised however kafka-python reports it."""

from __future__ import annotations

from kafka.errors import KafkaError, ProducerFencedError

from trainer.publish import _fenced


def test_fenced_directly_or_wrapped_in_a_later_send_error() -> None:
    assert _fenced(ProducerFencedError())
    wrapped = KafkaError(
        "Cannot perform send because at least one previous transactional or idempotent "
        "request has failed with errors.",
        ProducerFencedError(),
    )
    assert _fenced(wrapped)
    assert not _fenced(KafkaError("the broker is gone"))
