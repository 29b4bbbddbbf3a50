"""The gateway under gunicorn (4 workers) against a real broker and the real scorer.

One stack per module: fresh topics under a prefix of their own, a model version
published to ``models`` (multivariate, coef [2, -1], intercept 0.5), the scorer
(``streamscore scorer``) and the gateway (``streamscore gateway``) as subprocesses.
The test that stops and restarts the scorer runs last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

import gateway
from bus.clients import driver_for
from bus.clients.base import Driver, TopicPartition
from bus.messages import InferReply, InferRequest, ModelVersion
from bus.reply import AsyncTicket, ReplyAddress, ReplyClient
from bus.settings import CLIENTS, KafkaSettings
from bus.topics import TopicLayout, Topics, ensure_topics
from core.errors import BusError
from regressors import regressor_from_dict
from streamscore.broker import BrokerConfig, LocalBroker

BIN = Path(sys.executable).parent
OPENAPI = Path(gateway.__file__).with_name("openapi.json")
WORKERS = 4
TIMEOUT_MS = 3000
MODEL = "lin"
PARAMS = {"kind": "multivariate", "n_features": 2, "intercept": 0.5, "coef": [2.0, -1.0]}


def offline(rows: list[list[float]]) -> list[float]:
    """What the model gives without any bus: the regressors package itself."""
    return [float(v) for v in regressor_from_dict(PARAMS).predict(rows)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def oip(rows: list[list[float]], request_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [
            {"name": "x", "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": rows}
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


class Service:
    """A subprocess with its log in a file; stopped with SIGTERM."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], logs: Path) -> None:
        self.name, self.command, self.env = name, command, env
        self.log_path = logs / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@dataclass
class Stack:
    base: str
    settings: KafkaSettings
    topics: Topics
    scorer: Service
    gateway: Service
    env: dict[str, str]
    logs: Path

    def running(self) -> bool:
        """False once the gateway or the scorer has exited on its own."""
        return all(
            s.process is None or s.process.poll() is None for s in (self.scorer, self.gateway)
        )

    def infer_url(self, model: str = MODEL) -> str:
        return f"{self.base}/v2/models/{model}/infer"


def wait_until(what: str, check: Any, timeout: float, stack: Stack | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack is not None and not stack.running():
            break
        try:
            result = check()
        except requests.RequestException:
            result = None
        if result:
            return result
        time.sleep(0.2)
    logs = "" if stack is None else stack.gateway.log_tail() + stack.scorer.log_tail()
    raise AssertionError(f"gave up waiting for {what}\n{logs}")


@pytest.fixture(scope="module")
def stack(
    kafka_settings: KafkaSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    prefix = f"gw-{uuid.uuid4().hex[:8]}."
    topics = Topics.with_prefix(prefix)
    ensure_topics(kafka_settings, topics, TopicLayout(partitions=3, reply_partitions=8))
    producer = driver_for(kafka_settings).producer()
    model = ModelVersion(
        name=MODEL,
        version=1,
        kind="multivariate",
        n_features=2,
        params=PARAMS,
        trained_on={"count": 1000},
        train_score={"r2": 1.0, "rmse": 0.0, "mae": 0.0},
        created_at=int(time.time() * 1000),
    )
    producer.send(topics.models, model.to_bytes(), key=MODEL.encode())
    producer.flush()
    producer.close()

    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "STREAMSCORE_TOPIC_PREFIX": prefix,
        "STREAMSCORE_PARTITIONS": "3",
        "STREAMSCORE_REPLY_PARTITIONS": "8",
        "STREAMSCORE_SCORER_GROUP": prefix + "scorer",
        "STREAMSCORE_SCORER_REQUESTS_GROUP": prefix + "scorer-requests",
        "STREAMSCORE_SCORER_TRANSACTIONAL_ID": prefix + "scorer",
        "STREAMSCORE_GATEWAY_BIND": f"127.0.0.1:{port}",
        "STREAMSCORE_GATEWAY_WORKERS": str(WORKERS),
        "STREAMSCORE_GATEWAY_TIMEOUT_MS": str(TIMEOUT_MS),
        "STREAMSCORE_LOG_LEVEL": "INFO",
    }
    logs = tmp_path_factory.mktemp("gateway-logs")
    scorer = Service("scorer", [str(BIN / "streamscore"), "scorer"], env, logs).start()
    gateway = Service("gateway", [str(BIN / "streamscore"), "gateway"], env, logs).start()
    stack = Stack(f"http://127.0.0.1:{port}", kafka_settings, topics, scorer, gateway, env, logs)
    try:
        ready_workers: set[int] = set()

        def all_workers_ready() -> bool:
            answer = requests.get(f"{stack.base}/v2/health/ready", timeout=5)
            if answer.status_code == 200:
                ready_workers.add(answer.json()["worker"])
            return len(ready_workers) == WORKERS

        wait_until(f"{WORKERS} ready gateway workers", all_workers_ready, 90, stack)
        wait_until("a first answer from the scorer", lambda: warm(stack), 90, stack)
        yield stack
    finally:
        gateway.stop()
        scorer.stop()


def warm(stack: Stack) -> bool:
    answer = requests.post(stack.infer_url(), json=oip([[1.0, 1.0]]), timeout=10)
    return answer.status_code == 200


def test_ping(stack: Stack) -> None:
    answer = requests.get(f"{stack.base}/ping", timeout=5)
    assert answer.status_code == 200
    assert answer.json() == {"ping": "pong"}


def test_infer_gives_what_the_model_gives_offline(stack: Stack) -> None:
    rows = [[0.25, -1.5], [3.0, 7.0], [-2.0, 0.0]]
    answer = requests.post(stack.infer_url(), json=oip(rows, "offline-1"), timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == "offline-1"
    assert body["model_name"] == MODEL and body["model_version"] == "1"
    assert body["outputs"][0]["data"] == pytest.approx(offline(rows), abs=1e-9)
    short = requests.post(f"{stack.base}/predict", json={"x": rows[0]}, timeout=10).json()
    assert short["prediction"] == pytest.approx(offline(rows)[0], abs=1e-9)
    meta = requests.get(f"{stack.base}/v2/models/{MODEL}", timeout=5).json()
    assert meta["n_features"] == 2 and meta["versions"] == ["1"]


def test_500_concurrent_requests_each_get_their_own_answer(stack: Stack) -> None:
    def one(i: int) -> tuple[int, str, float, float]:
        row = [float(i), i / 7.0]
        started = time.perf_counter()
        answer = requests.post(stack.infer_url(), json=oip([row], f"c-{i}"), timeout=30)
        elapsed = time.perf_counter() - started
        body = answer.json()
        value = body["outputs"][0]["data"][0] if answer.status_code == 200 else float("nan")
        return answer.status_code, body.get("id", body.get("error")), value, elapsed

    served_before = infer_count(stack)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(500)))
    wall = time.perf_counter() - started
    statuses = [status for status, _, _, _ in results]
    assert statuses.count(200) == 500, {s: statuses.count(s) for s in set(statuses)}
    for i, (_, request_id, value, _) in enumerate(results):
        assert request_id == f"c-{i}"
        assert value == pytest.approx(offline([[float(i), i / 7.0]])[0], abs=1e-9)
    latencies = sorted(elapsed for _, _, _, elapsed in results)
    print(
        f"\n500 requests, 50 clients: {wall:.2f} s wall, {500 / wall:.0f} req/s; latency "
        f"p50 {latencies[250] * 1000:.1f} ms, p99 {latencies[494] * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms"
    )
    assert infer_count(stack) - served_before == 500  # one scrape counts every worker's


def metric(stack: Stack, pattern: str) -> float:
    """The one sample of /metrics that matches ``pattern`` (a regex ending before the value)."""
    text = requests.get(f"{stack.base}/metrics", timeout=10).text
    found = re.findall(rf"^{pattern} (\S+)$", text, re.MULTILINE)
    assert len(found) <= 1, found
    return float(found[0]) if found else 0.0


def infer_count(stack: Stack) -> float:
    """Successful infer requests, all gunicorn workers together."""
    return metric(
        stack,
        r'streamscore_gateway_requests_total\{method="POST",'
        r'route="/v2/models/\{name\}/infer",status="200"\}',
    )


def test_every_worker_answers_from_the_moment_it_is_ready(stack: Stack) -> None:
    """No stranded worker: each says ready with its reply partition read, and answers at once."""

    def readiness(_: int) -> dict[str, Any]:
        answer = requests.get(f"{stack.base}/v2/health/ready", timeout=5)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    with ThreadPoolExecutor(max_workers=8) as pool:
        seen = {r["worker"]: r for r in pool.map(readiness, range(64))}
    assert len(seen) == WORKERS and all(r["checks"]["reply_partition"] for r in seen.values())
    # each worker reads a replies partition of its own: none drops another's replies
    partitions = [r["reply_partitions"] for r in seen.values()]
    assert all(len(p) == 1 for p in partitions) and len({p[0] for p in partitions}) == WORKERS

    def one(i: int) -> tuple[int, float]:
        started = time.perf_counter()
        answer = requests.post(f"{stack.base}/predict", json={"x": [float(i), 1.0]}, timeout=10)
        return answer.status_code, time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(128)))
    assert [status for status, _ in results] == [200] * 128
    assert max(elapsed for _, elapsed in results) < 2.0  # nobody waited for a partition


def test_a_gateway_started_under_load_answers_200_from_its_first_answer(stack: Stack) -> None:
    """A worker takes requests only once it can answer them: its reply partition read and
    its catalogue loaded. Clients that fire before the gateway listens see no 503
    ("catalogue still loading") and no 504 from the first answer on."""
    port = free_port()
    env = {**stack.env, "STREAMSCORE_GATEWAY_BIND": f"127.0.0.1:{port}"}
    fresh = Service("gateway-fresh", [str(BIN / "streamscore"), "gateway"], env, stack.logs)
    statuses: list[int] = []
    done = threading.Event()

    def client() -> None:
        while not done.is_set():
            try:
                answer = requests.post(
                    f"http://127.0.0.1:{port}/predict", json={"x": [1.0, 2.0]}, timeout=10
                )
            except requests.ConnectionError:  # not listening yet
                time.sleep(0.02)
                continue
            statuses.append(answer.status_code)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    fresh.start()
    try:
        deadline = time.monotonic() + 90
        while statuses.count(200) < 400 and time.monotonic() < deadline and stack.running():
            time.sleep(0.1)
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=15)
        fresh.stop()
    counts = {status: statuses.count(status) for status in set(statuses)}
    assert counts.get(200, 0) >= 400 and set(counts) == {200}, (counts, fresh.log_tail())


def test_the_request_id_travels_over_the_bus_and_back(stack: Stack) -> None:
    request_id = f"trace-{uuid.uuid4().hex[:12]}"
    answer = requests.post(
        f"{stack.base}/predict",
        json={"x": [1.0, 2.0]},
        headers={"X-Request-Id": request_id},
        timeout=10,
    )
    assert answer.status_code == 200 and answer.headers["X-Request-Id"] == request_id
    made = requests.post(f"{stack.base}/predict", json={"x": [1.0, 2.0]}, timeout=10)
    assert len(made.headers["X-Request-Id"]) >= 16  # made when the client sends none
    wanted = ("request-id", request_id.encode())
    for topic in (stack.topics.requests, stack.topics.replies):
        found = [r for r in read_all(stack, topic) if wanted in list(r.headers or [])]
        assert len(found) == 1, topic


def read_all(stack: Stack, topic: str) -> list[Any]:
    """Every record of ``topic`` so far (no group)."""
    consumer = driver_for(stack.settings).consumer(group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for(topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(tps)
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            records += consumer.poll(0.2)
        return records
    finally:
        consumer.close()


def test_model_ready_and_scoring_a_labelled_batch(stack: Stack) -> None:
    assert requests.get(f"{stack.base}/v2/models/{MODEL}/ready", timeout=5).status_code == 200
    one = requests.get(f"{stack.base}/v2/models/{MODEL}/versions/1/ready", timeout=5)
    assert one.status_code == 200 and one.json()["ready"] is True
    assert requests.get(f"{stack.base}/v2/models/nope/ready", timeout=5).status_code == 404
    x = [[1.0, 2.0], [3.0, -1.0], [0.0, 0.5]]
    y = [v + 0.5 for v in offline(x)]
    scored = requests.post(
        f"{stack.base}/v2/models/{MODEL}/score", json={"x": x, "y": y}, timeout=5
    )
    assert scored.status_code == 200, scored.text
    assert scored.json()["rmse"] == pytest.approx(0.5) and scored.json()["count"] == 3


def test_an_off_the_shelf_oip_client_talks_to_the_gateway(stack: Stack) -> None:
    """tritonclient's HTTP client (the KServe v2 / Open Inference Protocol one), unchanged."""
    np = pytest.importorskip("numpy")
    httpclient = pytest.importorskip("tritonclient.http")
    client = httpclient.InferenceServerClient(url=stack.base.removeprefix("http://"))
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)
        assert client.is_model_ready(MODEL, "1")
        assert not client.is_model_ready("nope")
        rows = np.array([[1.0, 2.0], [3.0, -1.0]], dtype=np.float64)
        tensor = httpclient.InferInput("x", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows, binary_data=False)
        wanted = httpclient.InferRequestedOutput("predict", binary_data=False)
        result = client.infer(MODEL, [tensor], outputs=[wanted])
        assert result.as_numpy("predict").tolist() == pytest.approx(offline(rows.tolist()))
        with pytest.raises(Exception, match="unknown output"):
            client.infer(
                MODEL,
                [tensor],
                outputs=[httpclient.InferRequestedOutput("nope", binary_data=False)],
            )
    finally:
        client.close()


def test_unknown_model_or_version_is_404(stack: Stack) -> None:
    answer = requests.post(stack.infer_url("nope"), json=oip([[1.0, 2.0]]), timeout=10)
    assert answer.status_code == 404
    assert "nope" in answer.json()["error"]
    versioned = f"{stack.base}/v2/models/{MODEL}/versions/99/infer"
    assert requests.post(versioned, json=oip([[1.0, 2.0]]), timeout=10).status_code == 404
    assert requests.get(f"{stack.base}/v2/models/nope", timeout=5).status_code == 404
    wrong = requests.post(stack.infer_url(), json=oip([[1.0, 2.0, 3.0]]), timeout=10)
    assert wrong.status_code == 400  # checked against the catalogue before the bus
    assert "expected 2 features, got 3" in wrong.json()["error"]


def scrape_all_workers(stack: Stack, path: str, n: int = 64) -> list[str]:
    """``n`` answers to GET ``path``, 8 connections at a time so that every worker takes some.

    (One request at a time tends to land on the same few gunicorn workers.)
    """

    def one(_: int) -> str:
        answer = requests.get(stack.base + path, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(n)))


def test_async_request_is_answered_on_any_worker_and_process(stack: Stack) -> None:
    # A worker brings its bus counters to /metrics when it answers a request: every worker
    # answers a few first, so that late replies it counted before this test are not
    # counted as this test's (a gateway started by another test shares reply partitions).
    scrape_all_workers(stack, "/ping", 32)
    late_before = metric(stack, "streamscore_gateway_late_replies_total")
    rows = [[4.0, 1.0], [0.5, 0.5]]
    accepted = requests.post(
        stack.infer_url(),
        json=oip(rows, "async-1"),
        headers={"Prefer": "respond-async"},
        timeout=10,
    )
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["Location"]
    assert location.startswith("/v2/requests/")

    def answered() -> dict[str, Any] | None:
        poll = requests.get(stack.base + location, timeout=10)  # a new connection each time
        assert poll.status_code in (200, 202), poll.text
        return poll.json() if poll.status_code == 200 else None

    body = wait_until("the asynchronous answer", answered, 30, stack)
    assert body["id"] == "async-1"
    assert body["outputs"][0]["data"] == pytest.approx(offline(rows), abs=1e-9)
    for text in scrape_all_workers(stack, location, 24):  # any worker answers the same
        assert json.loads(text)["outputs"][0]["data"] == body["outputs"][0]["data"]
    # and a process that is not the gateway at all finds it from the token alone
    outsider = ReplyClient(driver_for(stack.settings), stack.topics.requests, stack.topics.replies)
    reply = outsider.fetch(AsyncTicket.parse(location.rsplit("/", 1)[1]), 10.0)
    assert reply is not None and reply.predictions == pytest.approx(offline(rows), abs=1e-9)
    assert requests.get(f"{stack.base}/v2/requests/1.2.abc", timeout=10).status_code == 404
    never = f"{stack.base}/v2/requests/1.0.{int(time.time() * 1000)}.0123456789abcdef"
    unknown = requests.get(never, timeout=10)  # well formed, never issued: not "pending"
    assert unknown.status_code == 404 and "no request" in unknown.json()["error"]
    # the worker that owns the reply's partition read it too, and did not count it late
    assert metric(stack, "streamscore_gateway_late_replies_total") == late_before


#: The document the gateway serves at /openapi.json (checked equal below); loaded from the
#: package so the operations are known when pytest collects, and called on the live server.
#: 413 (body too large) is a rejection too, beside schemathesis' default list.
schema = schemathesis.openapi.from_path(
    str(OPENAPI),
    config=schemathesis.Config.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": [400, 404, 405, 413]}}}
    ),
)


def test_the_live_openapi_document_is_the_packaged_one(stack: Stack) -> None:
    served = requests.get(f"{stack.base}/openapi.json", timeout=5)
    assert served.status_code == 200
    assert served.json() == json.loads(OPENAPI.read_text())


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_openapi_schemathesis_finds_no_server_error(case: Any, stack: Stack) -> None:
    response = case.call(base_url=stack.base, timeout=15)
    assert response.status_code < 500 or response.status_code in (503, 504), (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    case.validate_response(
        response,
        transport_kwargs={"base_url": stack.base},
        checks=[
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            negative_data_rejection,
        ],
    )


def test_scorer_stopped_gives_504_in_time_then_recovers(stack: Stack) -> None:
    stack.scorer.stop()
    started = time.monotonic()
    answer = requests.post(stack.infer_url(), json=oip([[1.0, 2.0]]), timeout=30)
    elapsed = time.monotonic() - started
    assert answer.status_code == 504, answer.text
    assert "no reply" in answer.json()["error"]
    assert TIMEOUT_MS / 1000 - 0.1 <= elapsed < TIMEOUT_MS / 1000 + 1.5
    stack.scorer.start()
    wait_until("the restarted scorer to answer", lambda: warm(stack), 90, stack)
    rows = [[9.0, 1.0]]
    answer = requests.post(stack.infer_url(), json=oip(rows), timeout=10)
    assert answer.status_code == 200
    assert answer.json()["outputs"][0]["data"] == pytest.approx(offline(rows), abs=1e-9)


# --- the reply client through a broker restart ----------------------------------------


class Echo:
    """A stand-in scorer in a thread: answers each request with the sum of each row.

    It rides through bus failures itself (new clients after any error).
    """

    def __init__(self, driver: Driver, topics: Topics, group: str) -> None:
        self.driver, self.topics, self.group = driver, topics, group
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Echo:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    def _run(self) -> None:
        while not self.stop.is_set():
            consumer = self.driver.consumer(group_id=self.group)
            producer = self.driver.producer(linger_ms=0)
            try:
                consumer.subscribe([self.topics.requests])
                while not self.stop.is_set():
                    for request in consumer.poll(0.1):
                        address = ReplyAddress.of_request(request)
                        asked = InferRequest.from_bytes(request.value)
                        reply = InferReply(asked.id, "echo", 1, [sum(r) for r in asked.instances])
                        producer.send(
                            address.topic,
                            reply.to_bytes(),
                            key=address.correlation_id.encode(),
                            partition=address.partition,
                            headers=address.reply_headers(),
                        )
                    producer.flush()
            except BusError:
                self.stop.wait(0.5)
            finally:
                consumer.close()
                producer.close(1.0)


@pytest.mark.skipif(
    not (os.environ.get("JAVA_HOME") or shutil.which("java")),
    reason="a broker of this test's own needs Java",
)
@pytest.mark.timeout(600)
@pytest.mark.parametrize("client", CLIENTS)
def test_the_reply_client_rides_through_a_broker_restart(
    client: str, tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    port, controller_port = free_port(), free_port()
    while controller_port == port:
        controller_port = free_port()
    config = replace(
        BrokerConfig.from_env({}),
        home=tmp_path / "kafka",
        cache_dir=BrokerConfig.from_env().cache_dir,  # the jars this machine has
        port=port,
        controller_port=controller_port,
        heap="512m",
    )
    broker = LocalBroker(config)
    try:
        broker.up()
        settings = replace(kafka_settings, bootstrap_servers=config.bootstrap, client=client)
        topics = Topics.with_prefix("restart.")
        ensure_topics(settings, topics, TopicLayout(partitions=1, reply_partitions=2))
        driver = driver_for(settings)
        bus = ReplyClient(driver, topics.requests, topics.replies).start()
        request = InferRequest("r", [[1.0, 2.0]])

        def answered() -> bool:
            try:
                return bus.call(request, 3.0).predictions == [3.0]
            except BusError:
                return False

        with Echo(driver, topics, "restart-scorer"):
            wait_until("a first answer", answered, 90)
            broker.kill(1)
            assert not answered()  # the broker is gone
            broker.up()
            wait_until("an answer after the restart", answered, 180)
        bus.close()
    finally:
        broker.down()
