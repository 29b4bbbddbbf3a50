"""HTTP/1.x request framing: where a request that is still arriving ends.

The gateway's worker (`gateway.worker`) reads requests in its event loop and
hands one to a thread only once `RequestBuffer` says it is whole: its head and
all of its body (Content-Length or chunked) have arrived. `Limits` are the sizes
gunicorn's parser accepts (and the gateway's body limit); `Framing` says what to
do with the bytes received so far.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BAD_CHUNKS",
    "BAD_LINE_END",
    "DEFAULT_FIELD_SIZE",
    "MAX_HEADERS",
    "MAX_REQUEST_LINE",
    "Framing",
    "Limits",
    "RequestBuffer",
]

#: gunicorn's largest request line and number of header fields (``gunicorn.http.message``).
MAX_REQUEST_LINE = 8190
MAX_HEADERS = 32768
DEFAULT_FIELD_SIZE = 8190
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
