"""The gateway as users start it (``streamscore gateway``), seen from raw sockets.

Slow and half-open clients, chunked bodies, ``Expect: 100-continue``, malformed
HTTP that gunicorn refuses itself, and client mistakes that must never be a 500.
One gateway per module, on fresh topics of its own under the session's broker;
no scorer and no model: nothing here waits for an answer from the bus.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bus.settings import KafkaSettings
from bus.topics import TopicLayout, Topics, ensure_topics

pytestmark = pytest.mark.timeout(180)

BIN = Path(sys.executable).parent
WORKERS = 2
MAX_BODY = 8192
CLIENT_TIMEOUT_S = 3
HUGE = "1" * 5000  # past Python's int/str conversion limit (4300 digits)


@dataclass
class Answer:
    """One HTTP response as read from the socket."""

    status: int
    headers: dict[str, str]
    body: bytes
    took_s: float = 0.0

    def error(self) -> str:
        """The contract's ``{"error": ...}`` text; fails unless the answer is exactly that."""
        assert self.headers.get("content-type", "").startswith("application/json"), self
        document = json.loads(self.body)
        assert set(document) == {"error"}, document
        assert isinstance(document["error"], str) and document["error"], document
        return str(document["error"])


@dataclass
class Gateway:
    """``streamscore gateway`` as a subprocess, its log in a file."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def exchange(self, data: bytes, timeout: float = 5.0) -> Answer:
        """Send ``data`` on a new connection, read one answer."""
        with self.connect(timeout) as sock:
            started = time.monotonic()
            # Answered and closed before it read everything? Read the answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(data)
            answer = read_answer(sock, head=data.startswith(b"HEAD "))
            answer.took_s = time.monotonic() - started
            return answer

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def read_answer(
    sock: socket.socket, buffered: bytearray | None = None, *, head: bool = False
) -> Answer:
    """Read one response (status line, headers, a Content-Length body or up to EOF).

    ``buffered`` holds what was read past the previous answer and keeps what is read
    past this one; ``head``: the answer to a HEAD request, which has no body.
    """
    data = bytearray() if buffered is None else buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before an answer: {bytes(data)!r}")
        data += chunk
    top, _, rest = bytes(data).partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = bytearray(rest)
    if status < 200 or head:
        length = 0
    elif "content-length" in headers:
        length = int(headers["content-length"])
    else:
        length = -1
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    if buffered is not None:
        buffered[:] = body[length:] if length >= 0 else b""
    return Answer(status, headers, bytes(body[: length if length >= 0 else None]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(method: str, path: str, body: bytes | None = None, **headers: str) -> bytes:
    """An HTTP/1.1 request as bytes (header names: ``Content_Type`` -> ``Content-Type``)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if body is not None and "Transfer_Encoding" not in headers:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def chunked(*parts: bytes) -> bytes:
    """``parts`` as chunks, with the last chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


@pytest.fixture(scope="module")
def gateway(
    kafka_settings: KafkaSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    prefix = f"gwf-{uuid.uuid4().hex[:8]}."
    topics = Topics.with_prefix(prefix)
    ensure_topics(kafka_settings, topics, TopicLayout(partitions=1, reply_partitions=2))
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "STREAMSCORE_TOPIC_PREFIX": prefix,
        "STREAMSCORE_GATEWAY_BIND": f"127.0.0.1:{port}",
        "STREAMSCORE_GATEWAY_WORKERS": str(WORKERS),
        "STREAMSCORE_GATEWAY_MAX_BODY_BYTES": str(MAX_BODY),
        "STREAMSCORE_GATEWAY_CLIENT_TIMEOUT_MS": str(CLIENT_TIMEOUT_S * 1000),
        "STREAMSCORE_LOG_LEVEL": "INFO",
    }
    log = tmp_path_factory.mktemp("gateway-faults") / "gateway.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(BIN / "streamscore"), "gateway"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    gw = Gateway(port, process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, gw.log_tail()
            try:
                if gw.exchange(request("GET", "/ping"), timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the gateway did not answer /ping\n" + gw.log_tail()
            time.sleep(0.2)
        yield gw
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def held(gateway: Gateway) -> Iterator[list[socket.socket]]:
    """Sockets a test leaves open on purpose; closed after it."""
    sockets: list[socket.socket] = []
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


# --- answers -------------------------------------------------------------------------------


def test_ping_and_head_ping(gateway: Gateway) -> None:
    answer = gateway.exchange(request("GET", "/ping"))
    assert (answer.status, json.loads(answer.body)) == (200, {"ping": "pong"})
    head = gateway.exchange(request("HEAD", "/ping"))
    assert head.status == 200 and head.body == b""
    assert head.headers["content-type"].startswith("application/json")


def test_keep_alive_and_pipelined_requests(gateway: Gateway) -> None:
    with gateway.connect() as sock:
        buffered = bytearray()
        for _ in range(3):
            sock.sendall(request("GET", "/ping"))
            assert read_answer(sock, buffered).status == 200
        sock.sendall(request("GET", "/ping") + request("HEAD", "/ping") + request("GET", "/v2"))
        answers = [read_answer(sock, buffered), read_answer(sock, buffered, head=True)]
        assert [a.status for a in answers] == [200, 200] and answers[1].body == b""
        assert json.loads(read_answer(sock, buffered).body)["name"] == "streamscore"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (f'{{"x": [{HUGE}, 1]}}', ["field 'x[0]'", "too large"]),
        (f'{{"x": [1, 2], "model": "m", "version": {HUGE}}}', ["field 'version'"]),
        ('{"x": [1, 2], "id": "\\udc00"}', ["field 'id'"]),
        ('{"x": [1, NaN]}', ["NaN"]),
        ("[1, 2]", ["JSON object"]),
    ],
)
def test_client_mistakes_are_400_through_gunicorn(
    gateway: Gateway, body: str, words: list[str]
) -> None:
    answer = gateway.exchange(request("POST", "/predict", body.encode()))
    assert answer.status == 400, answer
    for word in words:
        assert word in answer.error()


# --- chunked bodies, Expect: 100-continue, sizes ----------------------------------------------


def test_a_chunked_body_is_read_whole(gateway: Gateway) -> None:
    body = f'{{"x": [1, {HUGE}]}}'.encode()
    data = request("POST", "/predict", Transfer_Encoding="chunked")
    answer = gateway.exchange(data + chunked(body[:3], body[3:2000], body[2000:]))
    assert answer.status == 400, answer
    assert "field 'x[1]'" in answer.error()  # the last chunk was read too
    valid = gateway.exchange(data + chunked(b'{"x": ', b"[1, 2]}"))
    assert valid.status == 503, valid  # read and understood; no model on these topics
    assert "empty" not in valid.error()


def test_a_chunked_body_over_the_limit_is_413(gateway: Gateway) -> None:
    part = b"[1.0, 2.0], " * 100
    body = b'{"instances": [' + part * 8 + b"[1.0, 2.0]]}"
    assert len(body) > MAX_BODY
    data = request("POST", "/predict", Transfer_Encoding="chunked")
    answer = gateway.exchange(
        data + chunked(*[body[i : i + 1000] for i in range(0, len(body), 1000)])
    )
    assert answer.status == 413, answer
    assert f"{MAX_BODY} bytes" in answer.error()


def test_a_declared_length_over_the_limit_is_413_without_waiting_for_the_body(
    gateway: Gateway,
) -> None:
    head = b"POST /predict HTTP/1.1\r\nHost: g\r\nContent-Length: 1000000000\r\n\r\n{"
    answer = gateway.exchange(head, timeout=CLIENT_TIMEOUT_S + 5)
    assert answer.status == 413, answer
    assert f"{MAX_BODY} bytes" in answer.error()
    assert answer.took_s < 1.0


def test_expect_100_continue(gateway: Gateway) -> None:
    body = b'{"x": [1, 2], "version": 0, "model": "m"}'
    head = request("POST", "/predict", Expect="100-continue", Content_Length=str(len(body)))
    with gateway.connect() as sock:
        sock.sendall(head)
        buffered = bytearray()
        interim = read_answer(sock, buffered)
        assert interim.status == 100
        sock.sendall(body)
        answer = read_answer(sock, buffered)
        assert answer.status == 400, answer
        assert "field 'version'" in answer.error()


# --- gunicorn's own refusals are JSON ---------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /ping HTTP/9.9\r\nHost: g\r\n\r\n", 400),
        (b"GET /ping HTTP/1.1\r\nHo st: g\r\n\r\n", 400),
        (b"GET /ping HTTP/1.1\nHost: g\n\n", 400),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: g\r\n\r\n", 414),
        (b"GET /ping HTTP/1.1\r\nHost: g\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (
            b"GET /ping HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n",
            431,
        ),
        (b"GET /ping HTTP/1.1\r\n" + b"X-Many: 1234567\r\n" * 60_000, 431),  # head never ends
        (b"GET /ping HTTP/1.1\r\nHost: g\r\nExpect: tea\r\n\r\n", 417),
        (b"POST /predict HTTP/1.1\r\nHost: g\r\nContent-Length: 1x\r\n\r\n", 400),
        (
            b"POST /predict HTTP/1.1\r\nHost: g\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            400,
        ),
        (
            b"POST /predict HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"POST /predict HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /predict HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: br\r\n\r\n", 501),
    ],
    ids=[
        "request-line",
        "http-version",
        "header-name",
        "bare-lf",
        "uri-too-long",
        "header-too-large",
        "too-many-headers",
        "head-never-ends",
        "expectation",
        "content-length",
        "two-content-lengths",
        "length-and-chunked",
        "chunk-size",
        "transfer-coding",
    ],
)
def test_gunicorn_refusals_are_json(gateway: Gateway, data: bytes, status: int) -> None:
    answer = gateway.exchange(data)
    assert answer.status == status, answer
    assert answer.error()
    assert answer.headers.get("connection", "").lower() == "close"


# --- slow and half-open clients ---------------------------------------------------------------

SLOW_CLIENTS = 200


def test_ping_answers_promptly_while_200_clients_hold_unfinished_requests(
    gateway: Gateway, held: list[socket.socket]
) -> None:
    """Body unfinished, head unfinished, nothing sent, or answered and never closing.

    None of them may hold a thread or the worker's event loop.
    """
    unfinished = [
        b"POST /predict HTTP/1.1\r\nHost: g\r\nContent-Length: 100\r\n\r\n" + b'{"x": [1',
        b"POST /predict HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[1, 2",
        b"GET /ping HTTP/1.1\r\nHost: g\r\nX-Slow: ",
        b"",
        b"GET /ping HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
    ]
    for i in range(SLOW_CLIENTS):
        sock = gateway.connect()
        held.append(sock)
        if unfinished[i % len(unfinished)]:
            sock.sendall(unfinished[i % len(unfinished)])
    time.sleep(0.5)  # let every worker take its share
    took = []
    for _ in range(10):
        answer = gateway.exchange(request("GET", "/ping"), timeout=2.0)
        assert answer.status == 200, answer
        took.append(answer.took_s)
    assert max(took) < 1.0, took
    assert gateway.process.poll() is None


def test_an_unfinished_request_is_answered_408_after_the_client_timeout(
    gateway: Gateway,
) -> None:
    with gateway.connect(timeout=CLIENT_TIMEOUT_S + 5) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: g\r\nContent-Length: 10\r\n\r\n{")
        answer = read_answer(sock)
        took = time.monotonic() - started
        assert answer.status == 408, answer
        assert "whole request" in answer.error()
        assert CLIENT_TIMEOUT_S - 0.1 <= took < CLIENT_TIMEOUT_S + 2.0
        assert sock.recv(1) == b""  # and closed


def test_a_client_that_sends_nothing_is_closed(gateway: Gateway) -> None:
    with gateway.connect(timeout=CLIENT_TIMEOUT_S + 10) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - started < CLIENT_TIMEOUT_S + 2.0
