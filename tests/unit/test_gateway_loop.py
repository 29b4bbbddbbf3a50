"""The gunicorn worker's event loop, on socket pairs (no thread takes the requests)."""

from __future__ import annotations

import os
import selectors
import socket
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import gunicorn
import pytest
from gunicorn import glogging
from gunicorn.config import Config
from gunicorn.workers.gthread import TConn

from gateway.worker import GatewayWorker
from tests.unit.gateway_fakes import parse_answer

# --- the worker's event loop, on socket pairs (no thread takes the requests) -------------------


class HeldPool:
    """Stands in for the worker's thread pool: keeps what it is given, runs nothing."""

    def __init__(self) -> None:
        self.taken: list[TConn] = []

    def submit(self, fn: object, conn: TConn) -> Future[bool]:
        self.taken.append(conn)
        return Future()


@dataclass
class Loop:
    """A `GatewayWorker` with a real selector, a fake clock and a held pool."""

    worker: GatewayWorker
    pool: HeldPool
    now: list[float]
    clients: list[socket.socket] = field(default_factory=list)

    def connect(self) -> tuple[TConn, socket.socket]:
        ours, theirs = socket.socketpair()
        self.clients += [ours, theirs]
        conn = TConn(self.worker.cfg, ours, ("192.0.2.1", 4321), ("127.0.0.1", 8000))
        self.worker.nr_conns += 1
        self.worker.enqueue_req(conn)
        return conn, theirs

    def spin(self) -> None:
        for _ in range(5):
            self.worker.wait_for_and_dispatch_events(0.01)

    def later(self, seconds: float) -> None:
        self.now[0] += seconds
        self.worker.murder_keepalived()


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(2)
    return b"".join(iter(lambda: sock.recv(65536), b""))


@pytest.fixture
def loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[Loop]:
    monkeypatch.setenv("STREAMSCORE_GATEWAY_MAX_BODY_BYTES", "200000")
    monkeypatch.setenv("STREAMSCORE_GATEWAY_CLIENT_TIMEOUT_MS", "2000")
    cfg = Config()
    worker = GatewayWorker(1, os.getpid(), [], None, 30, cfg, glogging.Logger(cfg))
    worker.poller = selectors.DefaultSelector()
    pool = HeldPool()
    worker.tpool = pool
    now = [100.0]
    worker.clock = lambda: now[0]
    state = Loop(worker, pool, now)
    try:
        yield state
    finally:
        worker.poller.close()
        for sock in state.clients:
            sock.close()


def test_the_loop_hands_a_request_over_only_once_it_is_whole(loop: Loop) -> None:
    request = b"POST /predict HTTP/1.1\r\nContent-Length: 13\r\n\r\n" + b'{"x": [1, 2]}'
    conn, client = loop.connect()
    client.sendall(request[:-5])
    loop.spin()
    assert loop.pool.taken == []
    client.sendall(request[-5:])
    loop.spin()
    assert loop.pool.taken == [conn]
    assert conn.parser.unreader.buf.getvalue() == request
    assert loop.worker.incoming == {} and loop.worker.buffered == 0


def test_the_loop_answers_100_continue_then_waits_for_the_body(loop: Loop) -> None:
    conn, client = loop.connect()
    client.sendall(b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    loop.spin()
    client.settimeout(2)
    assert client.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert loop.pool.taken == []
    client.sendall(b"{}")
    loop.spin()
    assert loop.pool.taken == [conn]
    assert b"Expect" not in conn.parser.unreader.buf.getvalue()


def test_an_unfinished_request_is_answered_408_and_closed(loop: Loop) -> None:
    _, client = loop.connect()
    client.sendall(b"POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
    loop.spin()
    loop.later(1.9)
    assert loop.worker.incoming  # not yet
    loop.later(0.2)
    client.shutdown(socket.SHUT_WR)  # the client reads the answer, then closes
    loop.spin()
    status, headers, body = parse_answer(read_all(client))
    assert status == 408 and headers["connection"] == "close"
    assert "did not arrive in time" in body["error"]
    assert loop.worker.nr_conns == 0 and not loop.worker.closing
    assert loop.pool.taken == []


def test_a_silent_connection_is_closed_without_an_answer(loop: Loop) -> None:
    _, client = loop.connect()
    loop.spin()
    loop.later(2.1)
    assert read_all(client) == b""
    assert loop.worker.nr_conns == 0


def test_a_declared_body_over_the_limit_is_413_before_it_is_sent(loop: Loop) -> None:
    _, client = loop.connect()
    client.sendall(b"POST /p HTTP/1.1\r\nContent-Length: 200001\r\n\r\n")
    loop.spin()
    client.shutdown(socket.SHUT_WR)
    loop.spin()
    status, _, body = parse_answer(read_all(client))
    assert status == 413 and "200000 bytes" in body["error"]
    assert loop.worker.nr_conns == 0 and loop.pool.taken == []


def test_large_requests_are_refused_503_past_the_worker_budget(loop: Loop) -> None:
    loop.worker.budget = 100_000
    head = b"POST /p HTTP/1.1\r\nContent-Length: 150000\r\n\r\n"
    _, first = loop.connect()
    first.sendall(head + b"1" * 90_000)
    loop.spin()
    _, second = loop.connect()
    second.sendall(head + b"2" * 20_000)  # small so far: read whatever the others hold
    loop.spin()
    assert loop.worker.buffered > loop.worker.budget
    second.sendall(b"2" * 50_000)  # now large, and the budget is spent
    loop.spin()
    second.shutdown(socket.SHUT_WR)
    loop.spin()
    status, headers, body = parse_answer(read_all(second))
    assert status == 503 and headers["retry-after"] == "1"
    assert "retry" in body["error"]
    ping, client = loop.connect()
    client.sendall(b"GET /ping HTTP/1.1\r\n\r\n")
    loop.spin()
    assert loop.pool.taken == [ping]  # small requests still go through
    assert len(loop.worker.incoming) == 1  # the first one, still arriving


def test_a_finished_connection_closes_in_the_loop_without_blocking_it(loop: Loop) -> None:
    conn, client = loop.connect()
    client.sendall(b"GET /ping HTTP/1.1\r\nConnection: close\r\n\r\n")
    loop.spin()
    done: Future[bool] = Future()
    done.set_result(False)  # the thread answered and the connection is not kept alive
    started = time.monotonic()
    loop.worker.finish_request(conn, done)
    assert time.monotonic() - started < 0.1  # the client has not closed: no waiting for it
    assert conn in loop.worker.closing and loop.worker.nr_conns == 1
    client.close()
    loop.spin()
    assert loop.worker.closing == {} and loop.worker.nr_conns == 0


def test_on_another_gunicorn_the_worker_leaves_reading_to_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gunicorn, "version_info", (23, 0, 0))
    cfg = Config()
    worker = GatewayWorker(1, os.getpid(), [], None, 30, cfg, glogging.Logger(cfg))
    assert worker.buffering is False
    pool = HeldPool()
    worker.tpool = pool
    ours, theirs = socket.socketpair()
    with ours, theirs:
        conn = TConn(cfg, ours, ("192.0.2.1", 4321), ("127.0.0.1", 8000))
        worker.enqueue_req(conn)  # straight to a thread, as gthread does
        assert pool.taken == [conn] and worker.incoming == {}
