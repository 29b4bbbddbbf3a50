"""The requests one gateway process waits for, and the replies handed over to them.

`PendingReplies` is the table of waiting requests (keyed by correlation id) with
the counters of what became of them; the reply thread hands each ``replies``
record to it (`PendingReplies.deliver`), a caller waits on its `Waiter`'s event.
"""

from __future__ import annotations

import logging
import threading

from bus.clients.base import Record
from bus.messages import InferReply
from bus.reply.address import CORRELATION_ID, header
from bus.reply.errors import TooManyPendingError
from bus.reply.tickets import ASYNC_PREFIX
from core.errors import BusError, MessageError

log = logging.getLogger(__name__)


class Waiter:
    """One synchronous request waiting for its reply."""

    __slots__ = ("error", "event", "reply")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: InferReply | None = None
        self.error: BusError | None = None


def parse_reply(record: Record) -> InferReply:
    """The reply a ``replies`` record holds; a malformed one is a `BusError`."""
    try:
        return InferReply.from_bytes(record.value or b"")
    except MessageError as exc:
        raise BusError(
            f"the scorer sent a malformed reply ({record.topic}[{record.partition}]"
            f"@{record.offset}): {exc}"
        ) from exc


class PendingReplies:
    """The waiting requests of one process, at most ``max_pending``, and their counters."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._waiting: dict[str, Waiter] = {}
        self.replies = self.timeouts = self.late = self.rejected = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def counts(self) -> tuple[int, int, int, int, int]:
        """Waiting requests, replies handed over, timeouts, late replies, rejected requests."""
        with self._lock:
            return len(self._waiting), self.replies, self.timeouts, self.late, self.rejected

    def clear(self) -> None:
        """Forget every waiting request (a new process: none of them is its own)."""
        with self._lock:
            self._waiting.clear()

    def add(self, correlation_id: str) -> Waiter:
        """A new waiter for ``correlation_id``; `TooManyPendingError` when the table is full."""
        waiter = Waiter()
        with self._lock:
            if len(self._waiting) >= self.max_pending:
                self.rejected += 1
                raise TooManyPendingError(
                    f"this gateway worker already waits for {self.max_pending} replies; "
                    "retry later or add gateway workers"
                )
            self._waiting[correlation_id] = waiter
        return waiter

    def forget(self, correlation_id: str) -> None:
        """Stop waiting for ``correlation_id`` (its request could not be sent)."""
        with self._lock:
            self._waiting.pop(correlation_id, None)

    def expire(self, correlation_id: str) -> bool:
        """Stop waiting for a request whose time ran out; False if its reply came first."""
        with self._lock:
            timed_out = self._waiting.pop(correlation_id, None) is not None
            self.timeouts += timed_out
        return timed_out

    def deliver(self, record: Record) -> None:
        """Hand one ``replies`` record to the request waiting for it, or drop it."""
        raw = header(record, CORRELATION_ID)
        correlation_id = raw.decode("ascii", "replace") if raw else ""
        if correlation_id.startswith(ASYNC_PREFIX):
            return  # read by `fetch`, from any process
        with self._lock:
            waiter = self._waiting.pop(correlation_id, None)
            if waiter is None:
                self.late += 1
            else:
                self.replies += 1
        if waiter is None:
            log.debug("dropped a reply nobody here waits for: %r", correlation_id)
            return
        try:
            waiter.reply = parse_reply(record)
        except BusError as exc:
            waiter.error = exc
        waiter.event.set()
