"""The client side of request/reply (`bus.reply.ReplyClient`) on the in-memory driver.

A stand-in scorer answers requests the way the real one does: it reads the reply
address from the request's headers and writes the reply, with the correlation id,
to that partition of ``replies``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from bus.clients.base import Record, TopicPartition, TransientBusError
from bus.clients.memory import MemoryBroker
from bus.messages import InferReply, InferRequest
from bus.reply import (
    CORRELATION_ID,
    FETCH_WINDOW,
    REQUEST_ID,
    AsyncTicket,
    ReplyAddress,
    ReplyClient,
    ReplyTimeoutError,
    RequestTooLargeError,
    TooManyPendingError,
    UnknownTicketError,
)
from core.errors import BusError

REQUEST = InferRequest("r-1", [[1.0, 2.0]], "lin", None)


def eventually(what: str, check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topic("requests", 1)
    broker.create_topic("replies", 4)
    return broker


Factory = Callable[..., ReplyClient]


@pytest.fixture
def make_client(broker: MemoryBroker) -> Iterator[Factory]:
    made: list[ReplyClient] = []

    def make(**options: object) -> ReplyClient:
        ids = iter(f"id{i}" for i in range(100_000))
        client = ReplyClient(
            broker.driver(),
            "requests",
            "replies",
            **{
                "slot": 2,
                "max_pending": 100,
                "new_id": lambda: next(ids),
                "clock_ms": lambda: int(time.time() * 1000),
                "probe_interval_s": 0.05,
                **options,
            },  # type: ignore[arg-type]
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def ready(client: ReplyClient) -> ReplyClient:
    """Start ``client`` and wait until it reads its reply partition and reaches Kafka."""
    client.start()
    eventually("the reply partition", client.ready)
    return client


def requests_sent(broker: MemoryBroker) -> list[Record]:
    return broker.records("requests")


def wait_requests(broker: MemoryBroker, n: int) -> list[Record]:
    eventually(f"{n} requests", lambda: len(requests_sent(broker)) >= n)
    return requests_sent(broker)


def reply_to(broker: MemoryBroker, request: Record, value: bytes | None = None) -> Record:
    """Answer ``request`` as the scorer does: the sum of each row."""
    address = ReplyAddress.of_request(request)
    if value is None:
        asked = InferRequest.from_bytes(request.value)
        value = InferReply(asked.id, "lin", 1, [sum(row) for row in asked.instances]).to_bytes()
    return broker.produce(
        address.topic,
        value,
        key=address.correlation_id.encode(),
        partition=address.partition,
        headers=address.reply_headers(),
    )


class Scorer:
    """Answers every request on the broker, in a thread of its own."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scorer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        consumer = self.broker.driver().consumer(group_id=None)
        consumer.assign([TopicPartition("requests", 0)])
        while not self._stop.is_set():
            for request in consumer.poll(0.05):
                reply_to(self.broker, request)
        consumer.close()


def call_in_thread(
    client: ReplyClient, timeout_s: float = 2.0, request: InferRequest = REQUEST
) -> tuple[threading.Thread, dict[str, object]]:
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["reply"] = client.call(request, timeout_s)
        except Exception as exc:
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


# --- synchronous calls -----------------------------------------------------------------


def test_request_carries_the_contract_headers_and_gets_its_reply(
    broker: MemoryBroker, make_client: Factory
) -> None:
    client = ready(make_client())
    thread, out = call_in_thread(client)
    (request,) = wait_requests(broker, 1)
    assert InferRequest.from_bytes(request.value) == REQUEST
    assert request.key == b"id0"
    headers = dict(request.headers)
    assert headers["correlation-id"] == b"id0" and headers["reply-topic"] == b"replies"
    assert headers["reply-partition"] == b"2"  # slot 2 of 4 partitions
    assert set(headers) == {"correlation-id", "reply-topic", "reply-partition"}
    reply_to(broker, request)
    thread.join(2)
    reply = out["reply"]
    assert isinstance(reply, InferReply) and reply.predictions == [3.0]
    stats = client.stats()
    assert (stats.pending, stats.sent, stats.replies, stats.late_replies) == (0, 1, 1, 0)


def test_the_scorer_reads_the_address_the_client_wrote(
    broker: MemoryBroker, make_client: Factory
) -> None:
    client = ready(make_client())
    with pytest.raises(ReplyTimeoutError):
        client.call(REQUEST, 0.1)
    (request,) = requests_sent(broker)
    address = ReplyAddress.of_request(request)
    assert address.correlation_id == "id0" and address.topic == "replies"
    assert [address.partition] == client.owned_partitions() == [2]


def test_the_request_id_travels_in_the_request_and_reply_headers(
    broker: MemoryBroker, make_client: Factory
) -> None:
    client = ready(make_client())
    with Scorer(broker):
        assert client.call(REQUEST, 2.0, request_id="req-42").predictions == [3.0]
    (request,) = requests_sent(broker)
    assert dict(request.headers)[REQUEST_ID] == b"req-42"
    assert ReplyAddress.of_request(request).request_id == "req-42"
    (reply,) = broker.records("replies")
    assert dict(reply.headers)[REQUEST_ID] == b"req-42"


def test_many_concurrent_calls_each_get_their_own_answer(
    broker: MemoryBroker, make_client: Factory
) -> None:
    client = ready(make_client())
    results: list[object] = [None] * 200

    def one(i: int) -> None:
        results[i] = client.call(InferRequest(f"r-{i}", [[float(i), 1.0]]), 5.0)

    with Scorer(broker):
        threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    for i, reply in enumerate(results):
        assert isinstance(reply, InferReply) and reply.id == f"r-{i}"
        assert reply.predictions == [i + 1.0]
    assert client.stats().replies == 200 and client.stats().pending == 0


def test_a_late_reply_is_dropped_and_counted(broker: MemoryBroker, make_client: Factory) -> None:
    client = ready(make_client())
    with pytest.raises(ReplyTimeoutError, match="no reply within"):
        client.call(REQUEST, 0.05)
    reply_to(broker, requests_sent(broker)[0])
    eventually("the late reply", lambda: client.stats().late_replies == 1)
    stats = client.stats()
    assert (stats.pending, stats.timeouts, stats.replies) == (0, 1, 0)


def test_a_malformed_reply_fails_its_request(broker: MemoryBroker, make_client: Factory) -> None:
    client = ready(make_client())
    thread, out = call_in_thread(client)
    (request,) = wait_requests(broker, 1)
    reply_to(broker, request, b"nope")
    thread.join(2)
    assert "malformed reply" in str(out["error"])


def test_pending_requests_are_bounded(broker: MemoryBroker, make_client: Factory) -> None:
    client = ready(make_client(max_pending=2))
    calls = [call_in_thread(client, 5.0) for _ in range(2)]
    wait_requests(broker, 2)
    with pytest.raises(TooManyPendingError, match="already waits for 2"):
        client.call(REQUEST, 1.0)
    assert client.stats().rejected == 1
    for request in requests_sent(broker):
        reply_to(broker, request)
    for thread, out in calls:
        thread.join(2)
        assert "reply" in out


def test_a_request_too_large_for_the_bus(make_client: Factory) -> None:
    client = ready(make_client())
    big = InferRequest("r", [[123456.789] * 10_000] * 10)
    with pytest.raises(RequestTooLargeError, match="fewer rows"):
        client.call(big, 1.0)


def test_a_send_that_fails_is_a_bus_error_and_nothing_waits(
    broker: MemoryBroker, make_client: Factory
) -> None:
    client = ready(make_client())
    broker.fail_next("send", TransientBusError("leader moved"))
    with pytest.raises(BusError, match="cannot publish to 'requests'"):
        client.call(REQUEST, 1.0)
    assert client.stats().pending == 0 and requests_sent(broker) == []


def test_unreachable_kafka_fails_fast(broker: MemoryBroker, make_client: Factory) -> None:
    broker.fail_next("end_offsets", TransientBusError("broker down"), times=1_000_000)
    client = make_client().start()
    started = time.monotonic()
    with pytest.raises(BusError, match="did not answer"):
        client.call(REQUEST, 5.0)
    assert time.monotonic() - started < 1
    assert requests_sent(broker) == []


# --- the partition of this process ----------------------------------------------------


def test_the_partition_is_the_slot_modulo_the_partition_count(broker: MemoryBroker) -> None:
    clients = [ReplyClient(broker.driver(), "requests", "replies", slot=slot) for slot in (0, 5, 7)]
    try:
        assert [ready(c).owned_partitions() for c in clients] == [[0], [1], [3]]
        assert broker.calls.get("subscribe", 0) == 0  # assigned, never a group member
    finally:
        for client in clients:
            client.close()


def test_ready_at_once_without_any_group_and_never_stranded(broker: MemoryBroker) -> None:
    """More workers than partitions: every one is ready and answers (none waits for one)."""
    clients = [ReplyClient(broker.driver(), "requests", "replies", slot=s) for s in range(6)]
    try:
        for client in clients:
            assert client.wait_ready(5.0)
        with Scorer(broker):
            for i, client in enumerate(clients):
                reply = client.call(InferRequest(f"r{i}", [[float(i), 1.0]]), 3.0)
                assert reply.predictions == [i + 1.0]
        # two pairs of workers share partitions 0 and 1: each drops the other's reply
        assert sum(c.stats().late_replies for c in clients) == 4
    finally:
        for client in clients:
            client.close()


def test_not_ready_fails_at_once_instead_of_waiting(broker: MemoryBroker) -> None:
    broker.fail_next("partitions_for", TransientBusError("broker down"), times=1_000_000)
    client = ReplyClient(broker.driver(), "requests", "replies", slot=0)
    try:
        assert not client.wait_ready(0.3)
        started = time.monotonic()
        with pytest.raises(BusError, match="does not read 'replies' yet"):
            client.call(REQUEST, 5.0)
        assert time.monotonic() - started < 0.5 and requests_sent(broker) == []
    finally:
        client.close()


def test_the_partition_starts_at_its_end(broker: MemoryBroker, make_client: Factory) -> None:
    for partition in range(4):  # replies written before this process read the partition
        broker.produce("replies", b"{}", partition=partition, headers=[(CORRELATION_ID, b"old")])
    client = ready(make_client())
    broker.produce("replies", b"{}", partition=2, headers=[(CORRELATION_ID, b"new")])
    eventually("the new reply", lambda: client.stats().late_replies == 1)
    time.sleep(0.1)
    assert client.stats().late_replies == 1  # the old ones were never read


def test_a_new_consumer_resumes_where_requests_wait(
    broker: MemoryBroker, make_client: Factory
) -> None:
    client = ready(make_client())
    thread, out = call_in_thread(client, 5.0)
    (request,) = wait_requests(broker, 1)
    # the consumer fails and a new one is made; meanwhile the reply arrives: the new
    # consumer must read from where the old one stopped, not from the end
    broker.fail_next("poll", BusError("unexpected answer"))
    reply_to(broker, request)
    thread.join(5)
    assert isinstance(out.get("reply"), InferReply), out


# --- faults ---------------------------------------------------------------------------


def test_transient_faults_are_ridden_through(broker: MemoryBroker, make_client: Factory) -> None:
    client = ready(make_client())
    broker.fail_next("poll", TransientBusError("broker restarting"), times=4)
    eventually("the faults", lambda: broker.pending_faults("poll") == 0)
    ready(client)
    assert broker.calls["assign"] == 1  # the same consumer went on
    with Scorer(broker):
        assert client.call(REQUEST, 3.0).predictions == [3.0]


def test_other_bus_failures_make_a_new_consumer(broker: MemoryBroker, make_client: Factory) -> None:
    client = ready(make_client())
    broker.fail_next("poll", BusError("unexpected answer"))
    eventually("a new consumer", lambda: broker.calls["assign"] == 2)
    ready(client)
    with Scorer(broker):
        assert client.call(REQUEST, 3.0).predictions == [3.0]


def test_waits_for_the_replies_topic_to_exist(make_client: Factory) -> None:
    broker = MemoryBroker()
    broker.create_topic("requests", 1)
    client = ReplyClient(broker.driver(), "requests", "replies", slot=1)
    try:
        client.start()
        time.sleep(0.2)
        with pytest.raises(BusError, match="does not read 'replies' yet"):
            client.call(REQUEST, 0.1)
        broker.create_topic("replies", 2)
        ready(client)
        with Scorer(broker):
            assert client.call(REQUEST, 3.0).predictions == [3.0]
    finally:
        client.close()


def test_close_stops_the_threads_and_a_call_starts_them_again(
    broker: MemoryBroker, make_client: Factory
) -> None:
    client = ready(make_client())
    client.close()
    assert not [
        t for t in threading.enumerate() if t.name in ("replies-replies", "requests-requests")
    ]
    with Scorer(broker):
        eventually("ready again", lambda: ready(client) is client)
        assert client.call(REQUEST, 3.0).predictions == [3.0]


# --- asynchronous calls -----------------------------------------------------------------


def test_async_reply_is_found_by_any_client_and_is_not_late(
    broker: MemoryBroker, make_client: Factory
) -> None:
    client = ready(make_client())
    ticket = client.submit(REQUEST, 1.0)
    assert ticket.correlation_id.startswith("async-") and ticket.partition in {0, 1, 2, 3}
    assert AsyncTicket.parse(ticket.token()) == ticket
    outsider = ReplyClient(broker.driver(), "requests", "replies")
    assert outsider.fetch(ticket, 1.0) is None  # not answered yet
    (request,) = requests_sent(broker)
    assert ReplyAddress.of_request(request).partition == ticket.partition
    reply_to(broker, request)
    found = outsider.fetch(ticket, 1.0)
    assert found is not None and found.predictions == [3.0]
    time.sleep(0.1)
    stats = client.stats()
    assert (stats.late_replies, stats.replies, stats.sent) == (0, 0, 1)


def test_fetch_reads_back_in_windows_until_it_finds_the_reply(
    broker: MemoryBroker, make_client: Factory
) -> None:
    client = ready(make_client())
    ticket = client.submit(REQUEST, 1.0)
    reply_to(broker, requests_sent(broker)[0])
    for _ in range(FETCH_WINDOW * 2):  # later replies of other requests on the same partition
        broker.produce(
            "replies", b"{}", partition=ticket.partition, headers=[(CORRELATION_ID, b"x")]
        )
    seeks = broker.calls.get("seek", 0)
    found = client.fetch(ticket, 5.0)
    assert found is not None and found.id == "r-1"
    assert broker.calls["seek"] - seeks == 2  # the newest 1000, then 4000 more


def test_fetch_stops_at_replies_older_than_the_request(make_client: Factory) -> None:
    now = [1_000.0]
    broker = MemoryBroker(clock=lambda: now[0])
    broker.create_topic("replies", 1)
    for _ in range(FETCH_WINDOW * 3):  # replies an hour older than the ticket
        broker.produce("replies", b"{}", headers=[(CORRELATION_ID, b"x")])
    broker.create_topic("requests", 1)
    broker.produce("requests", b"{}", headers=[(CORRELATION_ID, b"async-abc")])
    client = ReplyClient(broker.driver(), "requests", "replies")
    ticket = AsyncTicket(0, 0, int((now[0] + 3600) * 1000), "async-abc")
    assert client.fetch(ticket, 5.0) is None  # pending: its request is there
    assert broker.calls["seek"] == 2  # one window of each topic reached before the send


def test_a_well_formed_token_never_issued_is_unknown(
    broker: MemoryBroker, make_client: Factory
) -> None:
    client = ready(make_client())
    client.submit(REQUEST, 1.0)  # another request, on the bus
    never = AsyncTicket(1, 0, int(time.time() * 1000), "async-0123456789abcdef")
    with pytest.raises(UnknownTicketError, match="no request"):
        client.fetch(never, 2.0)


def test_fetch_of_a_partition_the_topic_does_not_have(make_client: Factory) -> None:
    client = make_client()
    with pytest.raises(UnknownTicketError, match="no partition 9"):
        client.fetch(AsyncTicket(9, 0, 1, "async-abc"), 1.0)


def test_ticket_tokens_round_trip() -> None:
    ticket = AsyncTicket(7, 3, 1_700_000_000_123, "async-0123abcd")
    assert ticket.token() == "7.3.1700000000123.0123abcd"
    assert AsyncTicket.parse(ticket.token()) == ticket
    for bad in ("", "7.1.", "7.1.2.", "x.1.1.abc", "7.1.1.abc/def", "1234567.1.1.a", "7.1.1.a.b"):
        with pytest.raises(UnknownTicketError):
            AsyncTicket.parse(bad)
