"""gunicorn's refusals as the contract's JSON ``{"error": ...}``, with the same status.

gunicorn's own error pages (bad request line 400, URI too long 414, headers too
large 431, ...) are HTML; `JsonErrorPage` stands in for the client's socket while
gunicorn writes one and writes `json_error` instead, with `refusal_message`.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from typing import Any

from gunicorn import util

from gateway.framing import Limits
from gateway.payloads import too_large

__all__ = ["INTERNAL_ERROR", "JsonErrorPage", "json_error", "refusal_message"]

INTERNAL_ERROR = "internal error (logged on the gateway); please report it"


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


class JsonErrorPage:
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
