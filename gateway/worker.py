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
import enum
import json
import re
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any

import gunicorn
from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from gateway.config import GatewayConfig
from gateway.payloads import too_large

#: The gunicorn releases whose gthread worker this one builds on (its event loop,
#: connections and parser are not a public interface).
GUNICORN_MAJOR = 27
#: gunicorn's largest request line and number of header fields (``gunicorn.http.message``).
MAX_REQUEST_LINE = 8190
MAX_HEADERS = 32768
DEFAULT_FIELD_SIZE = 8190
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
INTERNAL_ERROR = "internal error (logged on the gateway); please report it"
BUSY = "the gateway is receiving too many large requests at once: retry in a moment"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
BAD_LINE_END = "not a valid HTTP/1.1 request (a bare LF ends a line): end every line with CRLF"
BAD_CHUNKS = (
    "the chunked body is malformed: send each chunk as its size in hexadecimal, CRLF, "
    "its data, CRLF, and end with a zero-size chunk"
)


class Framing(enum.Enum):
    """What to do with the bytes of a request received so far."""

    WAIT = "wait"  # not whole yet
    READY = "ready"  # whole, or something gunicorn refuses from what is there: hand it over
    BODY_TOO_LARGE = "body too large"  # 413
    LINE_TOO_LONG = "line too long"  # 414
    HEAD_TOO_LARGE = "head too large"  # 431
    BAD_LINE_END = "bare LF"  # 400
    BAD_CHUNKS = "malformed chunked body"  # 400


@dataclass(frozen=True)
class Limits:
    """How large the parts of a request may be: gunicorn's head limits, the gateway's body limit."""

    line: int = 4094
    fields: int = 100
    field: int = DEFAULT_FIELD_SIZE
    body: int = 1_000_000

    @classmethod
    def of(cls, cfg: Any, max_body_bytes: int) -> Limits:
        """The limits gunicorn's parser applies under ``cfg``, and ``max_body_bytes``."""
        line = int(cfg.limit_request_line)
        if line < 0 or line >= MAX_REQUEST_LINE:
            line = MAX_REQUEST_LINE
        elif line == 0:  # "unlimited": gunicorn's parser still stops at 1 MiB
            line = 1024 * 1024
        fields = int(cfg.limit_request_fields)
        if fields <= 0 or fields > MAX_HEADERS:
            fields = MAX_HEADERS
        field = int(cfg.limit_request_field_size)
        if field <= 0:
            field = DEFAULT_FIELD_SIZE
        return cls(line=line, fields=fields, field=field, body=max_body_bytes)

    @property
    def head(self) -> int:
        """The most bytes a head may take before it ends (request line, fields, blank lines)."""
        return self.line + 4 + self.fields * (self.field + 2) + 4


class RequestBuffer:
    """The bytes of one HTTP/1.x request as they arrive; `feed` says when it is whole.

    It reads the framing only (the head's end, Content-Length, chunked
    Transfer-Encoding, chunk sizes) and never judges the rest: whatever gunicorn
    would refuse is handed over as soon as gunicorn can see it, so that gunicorn
    answers it, from these bytes alone, without waiting for more.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.data = bytearray()
        self.continue_wanted = False  # the client waits for "100 Continue" before its body
        self._scanned = 0  # bytes of the head already searched for its end
        self._line_end = -1
        self._head_end = -1  # where the body starts
        self._length = 0  # Content-Length
        self._chunked = False
        self._pos = 0  # chunked: where the next chunk-size line starts
        self._body = 0  # chunked: data bytes in the chunks so far
        self._last_chunk = False  # chunked: the zero-size chunk was seen, trailers follow

    def feed(self, data: bytes) -> Framing:
        """Add ``data``; what to do with the request now."""
        self.data += data
        if self._head_end < 0:
            verdict = self._read_head()
            if verdict is not None:
                return verdict
        verdict = self._read_chunks() if self._chunked else self._read_length()
        if verdict is not Framing.WAIT:
            self.continue_wanted = False
        return verdict

    def take(self) -> bytes:
        """The request's bytes (with any that followed it on the connection)."""
        return bytes(self.data)

    def _read_head(self) -> Framing | None:
        data = self.data
        first = self._scanned
        end = data.find(b"\r\n\r\n", max(0, first - 3))
        stop = len(data) if end < 0 else end + 4
        # A line of the head must end with CRLF (RFC 9112): a bare LF is refused here,
        # since a head that never ends the way gunicorn reads it could keep it waiting.
        lf = data.find(b"\n", first, stop)
        while lf >= 0:
            if lf == 0 or data[lf - 1] != 0x0D:
                return Framing.BAD_LINE_END
            lf = data.find(b"\n", lf + 1, stop)
        self._scanned = stop
        if self._line_end < 0:
            start = 2 if data.startswith(b"\r\n") else 0  # one empty line may come first
            self._line_end = data.find(b"\r\n", start)
            line_length = (len(data) if self._line_end < 0 else self._line_end) - start
            if line_length > self.limits.line:
                return Framing.LINE_TOO_LONG
        if end < 0:
            return Framing.HEAD_TOO_LARGE if len(data) > self.limits.head else Framing.WAIT
        return self._parse_head(end)

    def _parse_head(self, end: int) -> Framing | None:
        lines = bytes(self.data[:end]).split(b"\r\n")
        if lines[0] == b"":
            lines = lines[1:]
        http11 = lines[0].endswith(b" HTTP/1.1")
        lengths: list[bytes] = []
        codings: list[bytes] = []
        expect_line = -1
        for i, line in enumerate(lines[1:], start=1):
            name, colon, value = line.partition(b":")
            if not colon:
                return Framing.READY  # not a header field: gunicorn refuses it
            name = name.lower()
            value = value.strip(b" \t")
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings += [c.strip(b" \t").lower() for c in value.split(b",")]
            elif name == b"expect" and http11:
                if value.lower() != b"100-continue" or expect_line >= 0:
                    return Framing.READY  # gunicorn answers 417
                expect_line = i
        if codings:
            if lengths or not http11 or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
                return Framing.READY  # framing gunicorn refuses (400 or 501)
            self._chunked = True
        elif lengths:
            if len(lengths) > 1 or not lengths[0].isdigit():
                return Framing.READY  # gunicorn refuses it (400)
            digits = lengths[0].lstrip(b"0") or b"0"
            if len(digits) > 18 or int(digits) > self.limits.body:
                return Framing.BODY_TOO_LARGE
            self._length = int(digits)
        if expect_line >= 0:
            # Answered here (see GatewayWorker); gunicorn must not answer it again.
            del lines[expect_line]
            head = b"\r\n".join(lines) + b"\r\n\r\n"
            self.data[: end + 4] = head
            end = len(head) - 4
            self.continue_wanted = True
        self._head_end = self._pos = end + 4
        return None

    def _read_length(self) -> Framing:
        whole = len(self.data) - self._head_end >= self._length
        return Framing.READY if whole else Framing.WAIT

    def _read_chunks(self) -> Framing:
        data, limits = self.data, self.limits
        while True:
            pos = self._pos
            if self._last_chunk:  # trailer fields, then an empty line
                if data[pos : pos + 2] == b"\r\n" or data.find(b"\r\n\r\n", pos) >= 0:
                    return Framing.READY
                too_long = len(data) - pos > limits.fields * (limits.field + 2) + 4
                return Framing.READY if too_long else Framing.WAIT
            line_end = data.find(b"\r\n", pos)
            if line_end < 0:
                return Framing.BAD_CHUNKS if len(data) - pos > limits.field else Framing.WAIT
            size_text, semicolon, _ = bytes(data[pos:line_end]).partition(b";")
            if semicolon:
                size_text = size_text.rstrip(b" \t")
            if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                return Framing.BAD_CHUNKS
            size = int(size_text, 16)
            if size == 0:
                self._last_chunk = True
                self._pos = line_end + 2
                continue
            if self._body + size > limits.body:
                return Framing.BODY_TOO_LARGE
            chunk_end = line_end + 2 + size
            if len(data) < chunk_end + 2:
                return Framing.WAIT
            if data[chunk_end : chunk_end + 2] != b"\r\n":
                return Framing.BAD_CHUNKS  # no CRLF after the chunk's data
            self._body += size
            self._pos = chunk_end + 2


def json_error(status: int, message: str, *, retry_after_s: int | None = None) -> bytes:
    """A whole HTTP/1.1 response with the contract's ``{"error": message}``; it closes."""
    body = json.dumps({"error": message}).encode()
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    retry = "" if retry_after_s is None else f"Retry-After: {retry_after_s}\r\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{retry}Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _detail(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 200 else text[:197] + "..."


def refusal_message(status: int, exc: BaseException, limits: Limits) -> str:
    """What to tell a client gunicorn refused with ``status`` (because of ``exc``)."""
    if status >= 500 and status != 501:
        return INTERNAL_ERROR
    detail = _detail(exc)
    messages = {
        400: f"not a valid HTTP/1.1 request ({detail}): check the request line and headers",
        403: f"forbidden ({detail})",
        408: "the whole request did not arrive in time: send it again, faster",
        413: str(too_large(limits.body)),
        414: f"the request line is longer than {limits.line} bytes: shorten the URL",
        417: f"unsupported expectation ({detail}): send 'Expect: 100-continue' or none",
        431: (
            f"the request's header fields are too large ({detail}): send at most "
            f"{limits.fields} fields of at most {limits.field} bytes each"
        ),
        501: (
            f"unsupported Transfer-Encoding ({detail}): send the body with a "
            "Content-Length, or chunked"
        ),
    }
    return messages.get(status, f"the request was refused ({detail})")


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


class _JsonErrorPage:
    """Stands in for the client's socket while gunicorn writes an error page; writes JSON instead.

    gunicorn (``Worker.handle_error``) picks the status, logs the refusal and writes
    a small HTML page to the socket; only the page is replaced, its status kept.
    """

    def __init__(self, sock: Any, exc: BaseException, limits: Limits) -> None:
        self._sock = sock
        self._exc = exc
        self._limits = limits

    def gettimeout(self) -> float:
        return 0.0  # gunicorn's util.write_nonblock then writes at once

    def setblocking(self, flag: bool) -> None:
        """Left to the real socket when the page is written."""

    def sendall(self, data: bytes) -> None:
        found = _STATUS_LINE.match(data)
        status = int(found.group(1)) if found else 500
        message = refusal_message(status, self._exc, self._limits)
        util.write_nonblock(self._sock, json_error(status, message))

    def send(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


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
        super().handle_error(req, _JsonErrorPage(client, exc, self.limits), addr, exc)


def _ip(conn: Any) -> str:
    client = getattr(conn, "client", None)
    if isinstance(client, tuple) and client:
        return str(client[0])
    return "unix" if client is not None else "?"
