"""The errors a caller of the gateway's reply client may get besides `BusError`."""

from __future__ import annotations

from core.errors import BusError


class ReplyTimeoutError(BusError):
    """No reply came within the timeout (the scorer is down, slow or overloaded)."""


class TooManyPendingError(BusError):
    """This process already waits for as many replies as it may."""


class RequestTooLargeError(BusError):
    """A request that encodes to more than a ``requests`` message may hold."""
