"""The project's exceptions: one base, messages that say what is wrong and what to do."""

from __future__ import annotations


class StreamscoreError(Exception):
    """Base of every error streamscore raises on purpose."""


class ConfigError(StreamscoreError):
    """A setting is missing or has a value that cannot be used."""


class MessageError(StreamscoreError):
    """A message does not follow the contract.

    The text names the field, what was expected and what was found, e.g.
    ``field 'x': expected an array of finite numbers, got 'abc'``.
    """

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"field {field!r}: {reason}" if field else reason)


class ModelError(StreamscoreError):
    """A model cannot be built, loaded or used (bad params, wrong shape, wrong input)."""


class BusError(StreamscoreError):
    """Kafka cannot be reached or did not answer in time."""


class BrokerError(StreamscoreError):
    """The local development broker cannot be installed, started or stopped."""
