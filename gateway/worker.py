"""The gateway's gunicorn worker: a thread takes a request only once it has all arrived.

gunicorn's gthread worker gives a connection to a thread as soon as it is
readable, and the thread then blocks reading the rest of the request: a client
that sends a head and never finishes its body (or trickles it) holds a thread,
and a few dozen of them stop a worker answering anyone, ``/ping`` included.
`GatewayWorker` reads every request in the worker's event loop instead, without
blocking, like a buffering proxy, and hands it to a thread only when it is
whole; threads never wait on a client:

- a request is whole once its head and all of its body (Content-Length or
  chunked) have arrived; `RequestBuffer` finds where it ends;
- a body declared or sent past ``STREAMSCORE_GATEWAY_MAX_BODY_BYTES`` is answered
  413 at once, a head past gunicorn's limits 414 or 431;
- a request not whole within ``STREAMSCORE_GATEWAY_CLIENT_TIMEOUT_MS`` is answered
  408 and closed, a connection that sends nothing in that time is closed;
- ``Expect: 100-continue`` is answered here, before the body is read;
- a connection is closed by lingering in the event loop (not in a thread, not
  blocking the loop), and each blocking socket call a thread makes is bounded
  by the client timeout too (``SO_RCVTIMEO`` / ``SO_SNDTIMEO``).

What is not plain HTTP/1.x framing (TLS, HTTP/2, the PROXY protocol) is left to
gunicorn as it is. gunicorn's own error pages (bad request line 400, URI too
long 414, headers too large 431, ...) are HTML: this worker writes them as the
contract's JSON ``{"error": ...}`` with the same status.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import gunicorn
from gunicorn.workers.gthread import ThreadWorker

from gateway.config import GatewayConfig
from gateway.error_pages import INTERNAL_ERROR, JsonErrorPage, json_error, refusal_message
from gateway.framing import (
    BAD_CHUNKS,
    BAD_LINE_END,
    DEFAULT_FIELD_SIZE,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
    Framing,
    Limits,
    RequestBuffer,
)

__all__ = [
    "BAD_CHUNKS",
    "BAD_LINE_END",
    "BUSY",
    "DEFAULT_FIELD_SIZE",
    "INTERNAL_ERROR",
    "MAX_HEADERS",
    "MAX_REQUEST_LINE",
    "Framing",
    "GatewayWorker",
    "Limits",
    "RequestBuffer",
    "bound_blocking_io",
    "json_error",
    "refusal_message",
]

#: The gunicorn releases whose gthread worker this one builds on (its event loop,
#: connections and parser are not a public interface).
GUNICORN_MAJOR = 27
#: How much of a request is read per readable event: first (most requests are small:
#: a large recv() buffer costs more than the read), then while a large one arrives.
FIRST_READ = 16 * 1024
READ_SIZE = 64 * 1024
#: How long a closed connection still reads (and drops) what its client sends, and how much.
LINGER_S = 2.0
LINGER_BYTES = 4 * 1024 * 1024
#: Unfinished requests a worker holds at most, in requests of the largest size (head
#: and body), and the size under which a request is read whatever the others hold.
BUDGET_REQUESTS = 32
SMALL_REQUEST = 64 * 1024
BUSY = "the gateway is receiving too many large requests at once: retry in a moment"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def bound_blocking_io(sock: socket.socket, seconds: float) -> None:
    """Make each blocking send or receive on ``sock`` give up after ``seconds`` without progress."""
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    except OSError:  # not every platform has them
        pass


@dataclass
class _Incoming:
    """A connection whose next request is still arriving."""

    buffer: RequestBuffer
    deadline: float
    registered: bool = False


@dataclass
class _Closing:
    """A connection being closed: what its client still sends is read and dropped."""

    deadline: float
    drained: int = 0


class GatewayWorker(ThreadWorker):  # type: ignore[misc]
    """gthread, with requests read whole in the event loop and gunicorn's errors in JSON."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = GatewayConfig.from_env()
        self.limits = Limits.of(self.cfg, config.max_body_bytes)
        self.client_timeout_s = config.client_timeout_s
        self.clock: Callable[[], float] = time.monotonic
        self.incoming: dict[Any, _Incoming] = {}
        self.closing: dict[Any, _Closing] = {}
        self.buffering = self._can_buffer()
        # Bytes of unfinished requests this worker may hold: past it, a large request
        # is refused (503) rather than read; small ones are always read.
        self.budget = BUDGET_REQUESTS * (self.limits.head + self.limits.body)
        self.buffered = 0

    def _can_buffer(self) -> bool:
        """Whether requests can be read in the loop: plain HTTP/1.x, the gunicorn it knows."""
        if gunicorn.version_info[0] != GUNICORN_MAJOR:
            self.log.warning(
                "gunicorn %s, not %d.x: requests are read by threads, and clients that send "
                "slowly hold them (pip install 'gunicorn>=%d,<%d')",
                gunicorn.__version__,
                GUNICORN_MAJOR,
                GUNICORN_MAJOR,
                GUNICORN_MAJOR + 1,
            )
            return False
        cfg = self.cfg
        plain = (
            not cfg.is_ssl
            and getattr(cfg, "http2_cleartext", "off") in ("off", False, None)
            and getattr(cfg, "proxy_protocol", "off") in ("off", False, None)
        )
        if not plain:
            self.log.info("TLS, HTTP/2 or the PROXY protocol: requests are read by threads")
        return plain

    # --- taking requests ---------------------------------------------------------------------

    def enqueue_req(self, conn: Any) -> None:
        """Read ``conn``'s next request in the event loop; a thread takes it once it is whole."""
        if not self.buffering:
            super().enqueue_req(conn)
            return
        if conn.parser is None:
            bound_blocking_io(conn.sock, self.client_timeout_s)
        conn.sock.setblocking(False)
        incoming = _Incoming(RequestBuffer(self.limits), self.clock() + self.client_timeout_s)
        self.incoming[conn] = incoming
        unreader = getattr(conn.parser, "unreader", None)
        ahead = unreader.take_buffered() if unreader is not None else b""
        # Bytes read with the previous request (pipelined) start this one.
        if not ahead or self._feed(conn, incoming, ahead):
            self._receive(conn)

    def _on_readable(self, conn: Any, _sock: Any) -> None:
        self._receive(conn)

    def _receive(self, conn: Any) -> None:
        incoming = self.incoming[conn]
        try:
            data = conn.sock.recv(READ_SIZE if incoming.buffer.data else FIRST_READ)
        except (BlockingIOError, InterruptedError):
            self._watch(conn, incoming)
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._forget(conn, incoming)
            self._close(conn)
            return
        if self._feed(conn, incoming, data):
            self._watch(conn, incoming)

    def _feed(self, conn: Any, incoming: _Incoming, data: bytes) -> bool:
        """Add ``data`` to ``conn``'s request; True while more of it is to come."""
        buffer = incoming.buffer
        size = len(buffer.data) + len(data)
        if size > SMALL_REQUEST and self.buffered + len(data) > self.budget:
            self._forget(conn, incoming)
            self.log.warning(
                "Request from ip=%s refused: %d bytes of requests held", _ip(conn), self.buffered
            )
            self._refuse(conn, 503, BUSY, retry_after_s=1)
            return False
        before = len(buffer.data)
        verdict = buffer.feed(data)
        self.buffered += len(buffer.data) - before
        if verdict is not Framing.WAIT:
            self._settle(conn, incoming, verdict)
            return False
        if buffer.continue_wanted:
            buffer.continue_wanted = False
            self._send(conn, CONTINUE)
        return True

    def _watch(self, conn: Any, incoming: _Incoming) -> None:
        if not incoming.registered:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
            incoming.registered = True

    def _forget(self, conn: Any, incoming: _Incoming) -> None:
        del self.incoming[conn]
        self.buffered -= len(incoming.buffer.data)
        if incoming.registered:
            self.poller.unregister(conn.sock)
            incoming.registered = False

    def _settle(self, conn: Any, incoming: _Incoming, verdict: Framing) -> None:
        self._forget(conn, incoming)
        if verdict is Framing.READY:
            conn.init()  # the parser, on the socket (plain HTTP/1.x: reads nothing)
            conn.parser.unreader.unread(incoming.buffer.take())
            super().enqueue_req(conn)
            return
        if verdict is Framing.BAD_CHUNKS:
            status, message = 400, BAD_CHUNKS
        elif verdict is Framing.BAD_LINE_END:
            status, message = 400, BAD_LINE_END
        else:
            status = {
                Framing.BODY_TOO_LARGE: 413,
                Framing.LINE_TOO_LONG: 414,
                Framing.HEAD_TOO_LARGE: 431,
            }[verdict]
            why = ValueError(f"no end of the head within {self.limits.head} bytes")
            message = refusal_message(status, why, self.limits)
        self.log.warning("Invalid request from ip=%s: %s", _ip(conn), verdict.value)
        self._refuse(conn, status, message)

    def _refuse(
        self, conn: Any, status: int, message: str, *, retry_after_s: int | None = None
    ) -> None:
        self._send(conn, json_error(status, message, retry_after_s=retry_after_s))
        self._linger(conn)

    def _send(self, conn: Any, data: bytes) -> None:
        """Write a short answer without blocking (what does not fit at once is dropped)."""
        with contextlib.suppress(OSError):
            conn.sock.send(data)

    # --- timeouts and closing ---------------------------------------------------------------

    def murder_keepalived(self, force: bool = False) -> None:
        """Also: answer 408 to requests past the client timeout, close silent connections."""
        super().murder_keepalived(force)
        now = self.clock()
        for conn, incoming in list(self.incoming.items()):
            silent = not incoming.buffer.data
            if force or now >= incoming.deadline or (silent and not self.alive):
                self._forget(conn, incoming)
                if silent or force:
                    self._close(conn)
                else:
                    self.log.info(
                        "Request from ip=%s unfinished after %.1f s: 408",
                        _ip(conn),
                        self.client_timeout_s,
                    )
                    self._refuse(conn, 408, refusal_message(408, TimeoutError(), self.limits))
        for conn, closing in list(self.closing.items()):
            if force or now >= closing.deadline:
                self._close(conn)

    def finish_request(self, *args: Any) -> None:
        """A connection the thread is done with closes by lingering in the loop, not blocking it."""
        if not self.buffering:
            super().finish_request(*args)
            return
        conn, fs = args
        if not fs.cancelled() and fs.exception() is None and fs.result() is False:
            self._linger(conn)
            return
        super().finish_request(conn, fs)

    def _linger(self, conn: Any) -> None:
        """Close ``conn`` once its client has closed too, or after `LINGER_S`.

        Closing a socket with unread bytes makes the kernel reset the connection,
        which can destroy the answer just written before the client reads it.
        """
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_closing, conn))
        except (OSError, KeyError, ValueError):
            self.nr_conns -= 1
            conn.close()
            return
        self.closing[conn] = _Closing(self.clock() + LINGER_S)

    def _on_closing(self, conn: Any, _sock: Any) -> None:
        closing = self.closing[conn]
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        closing.drained += len(data)
        if not data or closing.drained > LINGER_BYTES:
            self._close(conn)

    def _close(self, conn: Any) -> None:
        """Close ``conn`` now (it is watched for nothing else, or for closing only)."""
        if self.closing.pop(conn, None) is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
        self.nr_conns -= 1
        conn.close()

    # --- gunicorn's own error pages ----------------------------------------------------------

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """gunicorn's refusal (its status, its log lines), written as JSON ``{"error": ...}``."""
        super().handle_error(req, JsonErrorPage(client, exc, self.limits), addr, exc)


def _ip(conn: Any) -> str:
    client = getattr(conn, "client", None)
    if isinstance(client, tuple) and client:
        return str(client[0])
    return "unix" if client is not None else "?"
