"""The client side of request/reply (`bus.reply.ReplyClient`) on the in-memory driver.

A stand-in scorer answers requests the way the real one does: it reads the reply
address from the request's headers and writes the reply, with the correlation id,
to that partition of ``replies``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import pytest

from bus.clients.base import RebalanceCallback, Record, TopicPartition, TransientBusError
from bus.clients.memory import MemoryBroker, MemoryConsumer, MemoryDriver
from bus.messages import InferReply, InferRequest
from bus.reply import (
    CORRELATION_ID,
    FETCH_WINDOW,
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
GROUP = "gateway-replies"


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
                "group_id": GROUP,
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


def ready(client: ReplyClient, partitions: list[int] | None = None) -> ReplyClient:
    """Start ``client`` and wait until it owns ``partitions`` (any, if None) and reaches Kafka."""
    client.start()
    eventually(
        f"reply partitions {partitions}",
        lambda: (
            client.reachable()
            and (
                client.owned_partitions() == partitions
                if partitions is not None
                else bool(client.owned_partitions())
            )
        ),
    )
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
    client = ready(make_client(), [0, 1, 2, 3])
    thread, out = call_in_thread(client)
    (request,) = wait_requests(broker, 1)
    assert InferRequest.from_bytes(request.value) == REQUEST
    assert request.key == b"id0"
    headers = dict(request.headers)
    assert headers["correlation-id"] == b"id0" and headers["reply-topic"] == b"replies"
    assert int(headers["reply-partition"]) in {0, 1, 2, 3}
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
    client = ready(make_client(), [0, 1, 2, 3])
    with pytest.raises(ReplyTimeoutError):
        client.call(REQUEST, 0.1)
    (request,) = requests_sent(broker)
    address = ReplyAddress.of_request(request)
    assert address.correlation_id == "id0" and address.topic == "replies"
    assert address.partition in client.owned_partitions()


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
    with pytest.raises(BusError, match="cannot be reached"):
        client.call(REQUEST, 5.0)
    assert time.monotonic() - started < 1
    assert requests_sent(broker) == []


# --- partitions of this process -------------------------------------------------------


def test_replies_go_to_owned_partitions_in_turn(broker: MemoryBroker, make_client: Factory) -> None:
    first = ready(make_client())
    second = make_client().start()
    # the group splits the four partitions between the two members
    eventually(
        "a split",
        lambda: len(first.owned_partitions()) == 2 and len(second.owned_partitions()) == 2,
    )
    mine = first.owned_partitions()
    assert set(mine).isdisjoint(second.owned_partitions())
    for _ in range(4):
        with pytest.raises(ReplyTimeoutError):
            first.call(REQUEST, 0.01)
    used = [ReplyAddress.of_request(r).partition for r in requests_sent(broker)]
    assert sorted(set(used)) == mine and used[:2] != [used[0]] * 2


def test_partitions_of_a_member_that_leaves_are_taken_over(
    broker: MemoryBroker, make_client: Factory
) -> None:
    first = ready(make_client())
    second = make_client().start()
    eventually("a split", lambda: len(first.owned_partitions()) == 2)
    second.close()
    eventually("all four back", lambda: first.owned_partitions() == [0, 1, 2, 3])
    with Scorer(broker):
        assert first.call(REQUEST, 2.0).predictions == [3.0]


def test_a_member_with_no_partition_says_so(broker: MemoryBroker) -> None:
    broker.create_topic("few-replies", 1)
    owner = ReplyClient(broker.driver(), "requests", "few-replies", group_id="g1")
    idle = ReplyClient(broker.driver(), "requests", "few-replies", group_id="g1")
    try:
        ready(owner, [0])
        idle.start()
        eventually("the idle member to reach Kafka", idle.reachable)
        with pytest.raises(BusError, match="owns no partition"):
            idle.call(REQUEST, 0.2)
    finally:
        owner.close()
        idle.close()


def test_newly_owned_partitions_start_at_their_end(
    broker: MemoryBroker, make_client: Factory
) -> None:
    for partition in range(4):  # replies written before this process owned the partitions
        broker.produce("replies", b"{}", partition=partition, headers=[(CORRELATION_ID, b"old")])
    client = ready(make_client(), [0, 1, 2, 3])
    broker.produce("replies", b"{}", partition=2, headers=[(CORRELATION_ID, b"new")])
    eventually("the new reply", lambda: client.stats().late_replies == 1)
    time.sleep(0.1)
    assert client.stats().late_replies == 1  # the old ones were never read


class NoBlockingInCallbacks(MemoryConsumer):
    """Notes calls that block inside a rebalance callback (they hold up the poll, and
    some client versions refuse them there); the reply client makes none."""

    blocking: ClassVar[list[str]] = []

    def __init__(self, broker: MemoryBroker, options: Mapping[str, Any]) -> None:
        super().__init__(broker, options)
        self._inside = False

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        super().subscribe(
            topics, on_assign=self._guard(on_assign), on_revoke=self._guard(on_revoke)
        )

    def _guard(self, callback: RebalanceCallback | None) -> RebalanceCallback | None:
        if callback is None:
            return None

        def guarded(partitions: list[TopicPartition]) -> None:
            self._inside = True
            try:
                callback(partitions)
            finally:
                self._inside = False

        return guarded

    def _note(self, name: str) -> None:
        if self._inside:
            self.blocking.append(name)

    def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        self._note("end_offsets")
        return super().end_offsets(tps)

    def position(self, tp: TopicPartition) -> int:
        self._note("position")
        return super().position(tp)

    def committed(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        self._note("committed")
        return super().committed(tps)

    def partitions_for(self, topic: str) -> list[int]:
        self._note("partitions_for")
        return super().partitions_for(topic)


class StrictDriver(MemoryDriver):
    def consumer(self, **options: Any) -> MemoryConsumer:
        return NoBlockingInCallbacks(self.broker, options)


def test_a_partition_owned_again_resumes_where_requests_wait(broker: MemoryBroker) -> None:
    broker.create_topic("one-reply", 1)
    NoBlockingInCallbacks.blocking.clear()
    client = ReplyClient(StrictDriver(broker), "requests", "one-reply", group_id="g2")
    try:
        ready(client, [0])
        thread, out = call_in_thread(client, 5.0)
        (request,) = wait_requests(broker, 1)
        # the reply thread stops polling a while; meanwhile the group rebalances (a new
        # member joins) and the reply arrives: when the partition comes back, the
        # thread must read it from where it stopped, not from the end
        broker.fail_next("poll", TransientBusError("coordinator moved"), times=2)
        joiner = broker.driver().consumer(group_id="g2")
        joiner.subscribe(["one-reply"])
        reply_to(broker, request)
        thread.join(5)
        assert isinstance(out.get("reply"), InferReply), out
        joiner.close()
        eventually("the partition again", lambda: client.owned_partitions() == [0])
    finally:
        client.close()
    assert NoBlockingInCallbacks.blocking == []  # no blocking call inside a rebalance callback


# --- faults ---------------------------------------------------------------------------


def test_transient_faults_are_ridden_through(broker: MemoryBroker, make_client: Factory) -> None:
    client = ready(make_client())
    broker.fail_next("poll", TransientBusError("broker restarting"), times=4)
    eventually("the faults", lambda: broker.pending_faults("poll") == 0)
    ready(client)
    with Scorer(broker):
        assert client.call(REQUEST, 3.0).predictions == [3.0]
    assert broker.calls["subscribe"] == 1  # the same consumer went on


def test_other_bus_failures_make_a_new_consumer(broker: MemoryBroker, make_client: Factory) -> None:
    client = ready(make_client())
    broker.fail_next("poll", BusError("unexpected answer"))
    eventually("a new member", lambda: broker.calls["subscribe"] == 2)
    ready(client)
    with Scorer(broker):
        assert client.call(REQUEST, 3.0).predictions == [3.0]


def test_waits_for_the_replies_topic_to_exist(make_client: Factory) -> None:
    broker = MemoryBroker()
    broker.create_topic("requests", 1)
    client = ReplyClient(broker.driver(), "requests", "replies", group_id="g")
    try:
        client.start()
        time.sleep(0.2)
        with pytest.raises(BusError, match="cannot be reached"):
            client.call(REQUEST, 0.1)
        broker.create_topic("replies", 2)
        ready(client, [0, 1])
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
    outsider = ReplyClient(broker.driver(), "requests", "replies", group_id="unused")
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
    client = ReplyClient(broker.driver(), "requests", "replies", group_id="g")
    ticket = AsyncTicket(0, int((now[0] + 3600) * 1000), "async-abc")
    assert client.fetch(ticket, 5.0) is None
    assert broker.calls["seek"] == 1  # the first window already reached before the send


def test_fetch_of_a_partition_the_topic_does_not_have(make_client: Factory) -> None:
    client = make_client()
    with pytest.raises(UnknownTicketError, match="no partition 9"):
        client.fetch(AsyncTicket(9, 1, "async-abc"), 1.0)


def test_ticket_tokens_round_trip() -> None:
    ticket = AsyncTicket(7, 1_700_000_000_123, "async-0123abcd")
    assert ticket.token() == "7.1700000000123.0123abcd"
    assert AsyncTicket.parse(ticket.token()) == ticket
    for bad in ("", "7.1.", "x.1.abc", "7.1.abc/def", "1234567.1.a", "7.1.a.b"):
        with pytest.raises(UnknownTicketError):
            AsyncTicket.parse(bad)
