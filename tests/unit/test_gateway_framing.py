"""The gunicorn worker's request framing (`RequestBuffer`, `Limits`) and its refusals in JSON."""

from __future__ import annotations

import os
import socket

import pytest
from gunicorn import glogging
from gunicorn.config import Config
from gunicorn.http.errors import (
    ExpectationFailed,
    InvalidRequestLine,
    LimitRequestHeaders,
    LimitRequestLine,
    UnsupportedTransferCoding,
)

from gateway.worker import Framing, GatewayWorker, Limits, RequestBuffer, json_error
from tests.unit.gateway_fakes import parse_answer

# --- the gunicorn worker: framing requests, refusals in JSON -----------------------------------

SMALL = Limits(line=100, fields=5, field=50, body=100)


def feed_all(buffer: RequestBuffer, data: bytes, step: int = 1) -> list[Framing]:
    """Feed ``data`` ``step`` bytes at a time; every verdict, in order."""
    return [buffer.feed(data[i : i + step]) for i in range(0, len(data), step)]


@pytest.mark.parametrize(
    "data",
    [
        b"GET /ping HTTP/1.1\r\nHost: g\r\n\r\n",
        b"\r\nGET /ping HTTP/1.1\r\nHost: g\r\n\r\n",  # one empty line first is allowed
        b"POST /predict HTTP/1.1\r\nContent-Length: 13\r\n\r\n" + b'{"x": [1, 2]}',
        b"POST /predict HTTP/1.1\r\ncontent-length:  0013 \r\n\r\n" + b'{"x": [1, 2]}',
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b'6\r\n{"x": \r\n7;ext=1\r\n[1, 2]}\r\n0\r\n\r\n',
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n2\r\nab\r\n0\r\nT: v\r\n\r\n",
    ],
    ids=["get", "leading-crlf", "length", "length-spaced", "chunked", "chunked-trailer"],
)
def test_a_request_is_ready_only_once_it_is_whole(data: bytes) -> None:
    byte_by_byte = feed_all(RequestBuffer(SMALL), data)
    assert byte_by_byte[-1] is Framing.READY
    assert set(byte_by_byte[:-1]) <= {Framing.WAIT}
    at_once = RequestBuffer(SMALL)
    assert at_once.feed(data) is Framing.READY
    assert at_once.take() == data


def test_pipelined_requests_are_handed_over_together() -> None:
    two = b"GET /ping HTTP/1.1\r\n\r\n" + b"GET /v2 HTTP/1.1\r\n\r\n"
    buffer = RequestBuffer(SMALL)
    assert buffer.feed(two) is Framing.READY
    assert buffer.take() == two


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"POST /p HTTP/1.1\r\nContent-Length: 101\r\n\r\n", Framing.BODY_TOO_LARGE),
        (
            b"POST /p HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
            Framing.BODY_TOO_LARGE,
        ),
        (b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n", Framing.BODY_TOO_LARGE),
        (
            b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"fffffffffffffffffffffff\r\n",
            Framing.BODY_TOO_LARGE,
        ),
        (b"GET /" + b"a" * 100 + b" HTTP/1.1", Framing.LINE_TOO_LONG),
        (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: g\r\n\r\n", Framing.LINE_TOO_LONG),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 80, Framing.HEAD_TOO_LARGE),
        (b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", Framing.BAD_CHUNKS),
        (b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", Framing.BAD_CHUNKS),
        (b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 60, Framing.BAD_CHUNKS),
        (b"GET / HTTP/1.1\nHost: g\n", Framing.BAD_LINE_END),
        (b"GET / HTTP/1.1\r\nHost: g\n", Framing.BAD_LINE_END),
        # what gunicorn refuses from the head alone: handed over at once, gunicorn answers
        (b"GET / HTTP/1.1\r\nBroken\r\n\r\n", Framing.READY),
        (b"POST /p HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", Framing.READY),
        (b"POST /p HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", Framing.READY),
        (
            b"POST /p HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            Framing.READY,
        ),
        (b"POST /p HTTP/1.1\r\nTransfer-Encoding: br\r\n\r\n", Framing.READY),
        (b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Framing.READY),
        (b"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Framing.READY),
        (b"POST /p HTTP/1.1\r\nExpect: tea\r\nContent-Length: 5\r\n\r\n", Framing.READY),
    ],
)
def test_what_cannot_be_served_is_known_without_waiting(data: bytes, verdict: Framing) -> None:
    assert RequestBuffer(SMALL).feed(data) is verdict


def test_expect_100_continue_is_answered_by_the_worker_not_by_gunicorn() -> None:
    buffer = RequestBuffer(SMALL)
    head = b"POST /p HTTP/1.1\r\nHost: g\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n"
    assert buffer.feed(head) is Framing.WAIT
    assert buffer.continue_wanted
    assert buffer.feed(b"{}") is Framing.READY
    assert not buffer.continue_wanted
    assert buffer.take() == b"POST /p HTTP/1.1\r\nHost: g\r\nContent-Length: 2\r\n\r\n{}"
    whole = RequestBuffer(SMALL)
    assert whole.feed(head + b"{}") is Framing.READY
    assert not whole.continue_wanted  # the body came with the head: nothing to answer


def test_limits_follow_gunicorn_settings() -> None:
    assert Limits.of(Config(), 1000) == Limits(line=4094, fields=100, field=8190, body=1000)
    cfg = Config()
    cfg.set("limit_request_line", 0)
    cfg.set("limit_request_fields", 0)
    cfg.set("limit_request_field_size", 0)
    unlimited = Limits.of(cfg, 5)
    assert (unlimited.line, unlimited.fields, unlimited.field) == (1024 * 1024, 32768, 8190)
    assert Limits(line=10, fields=2, field=3, body=1).head == 10 + 4 + 2 * 5 + 4


@pytest.mark.parametrize(
    ("exc", "status", "words"),
    [
        (InvalidRequestLine("GARBAGE"), 400, ["GARBAGE", "request line"]),
        (LimitRequestLine(5000, 4094), 414, ["4094 bytes", "shorten"]),
        (LimitRequestHeaders("limit request headers fields"), 431, ["100 fields", "8190 bytes"]),
        (UnsupportedTransferCoding("br"), 501, ["Transfer-Encoding", "chunked"]),
        (ExpectationFailed("tea"), 417, ["100-continue"]),
        (RuntimeError("secret detail"), 500, ["internal error"]),
    ],
)
def test_gunicorn_refusals_are_written_as_json(
    exc: Exception, status: int, words: list[str]
) -> None:
    cfg = Config()
    worker = GatewayWorker(1, os.getpid(), [], None, 30, cfg, glogging.Logger(cfg))
    ours, theirs = socket.socketpair()
    with ours, theirs:
        worker.handle_error(None, ours, ("192.0.2.1", 4321), exc)
        ours.shutdown(socket.SHUT_WR)
        raw = b"".join(iter(lambda: theirs.recv(65536), b""))
    answer_status, headers, body = parse_answer(raw)
    assert answer_status == status
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert set(body) == {"error"}
    for word in words:
        assert word in body["error"]
    assert "secret" not in body["error"]


def test_json_error_is_a_whole_closing_response() -> None:
    status, headers, body = parse_answer(json_error(408, "too slow: send it again"))
    assert (status, headers["connection"], body) == (
        408,
        "close",
        {"error": "too slow: send it again"},
    )
    assert json_error(413, "x").startswith(b"HTTP/1.1 413 ")
