"""7b. Gateway fresh starts: a 4-worker gateway started ten times while clients already fire.

Target: "Ten fresh starts of a 4-worker gateway under load: no 504, no request
slower than the reply timeout." Per Kafka client, one scorer runs throughout;
then, ten times, 16 keep-alive clients start firing ``POST /predict`` at a port
where nothing listens yet, a fresh gateway (``streamscore gateway``, 4 workers)
is started there, the load goes on for 5 s after the first 200, stops, each
worker is asked ``GET /v2/health/ready`` (its pid and the replies partition it
reads), and the gateway is stopped as the supervisor stops it (SIGTERM).

A refused connection (the gateway not listening yet) is retried after 20 ms and
counted as "not listening yet", not as a failure. A request's latency runs from
just before it is sent (connection included) to its answer read, so a request
accepted by the kernel before any worker is ready counts the wait for one.

A start during which the gateway or the scorer exits before the bench stops it is
reported apart ("disturbed") and made up for, up to 3 more starts; a scorer that is
gone is started again before the next start. ``BENCH_GATEWAY_STARTS`` sets the count.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.config import BenchConfig
from bench.context import BenchContext, process_tree
from bench.gateway_load import THREADS, WORKERS, WRK_BODY, wait_ready
from bench.models import default_models, publish
from bench.report import BenchResult, fmt
from bus.topics import Topics
from core.env import env_int
from core.stats import percentile
from gateway.config import GatewayConfig
from streamscore.broker import free_port
from streamscore.processes import Supervisor

log = logging.getLogger(__name__)

TITLE = "7b. gateway fresh starts"
STARTS = 10
CLIENTS = 16
LOAD_AFTER_FIRST_S = 5.0  # the load goes on this long after the first 200
RETRY_S = 0.02  # a client waits this long after a refused connection (or any error)
FIRST_ANSWER_WAIT_S = 20.0  # a start with no 200 by then is given up
SPARE_STARTS = 3  # starts disturbed from outside are made up for, up to this many
REQUEST_TIMEOUT_S = 30.0  # the clients' socket timeout: well above the reply timeout
REFUSED = "ConnectionRefusedError"


@dataclass(frozen=True)
class Answer:
    """One answered request: when it was sent (s since the start), its latency, its status."""

    sent_s: float
    ms: float
    status: int
    reason: str = ""  # a non-200 answer's error message

    @property
    def answered_s(self) -> float:
        """When its answer was read, in seconds since the start."""
        return self.sent_s + self.ms / 1000


@dataclass(frozen=True)
class Failure:
    """One request that got no answer: when it was sent and the error's class name."""

    sent_s: float
    kind: str


@dataclass(frozen=True)
class ReadyAnswer:
    """What one worker said to ``GET /v2/health/ready``."""

    pid: int
    status: int
    partitions: tuple[int, ...]


@dataclass(frozen=True)
class StartSummary:
    """What the clients saw in one fresh start, and which workers answered after it."""

    statuses: dict[str, int]  # "200", "503", "504", "other"
    reasons: dict[str, int]  # "<status> <error message>" of the non-200 answers
    not_listening: int  # refused connections before the first answer (retried)
    errors_before: dict[str, int]  # other transport errors before the first answer
    errors_after: dict[str, int]  # every transport error after the first answer
    max_ms: float  # of any answered request
    max_ms_after_first: float  # of the requests sent after the first 200 was read
    first_200_s: float | None  # from the start to the first 200 read
    workers_ready: int  # distinct worker pids that answered ready (200)
    partitions: tuple[int, ...]  # the replies partitions those workers read
    all_workers: bool  # every worker of the gateway answered ready, each on its own partition

    @property
    def non_200(self) -> int:
        """Answers other than 200."""
        return sum(n for status, n in self.statuses.items() if status != "200")


def status_group(status: int) -> str:
    """``"200"``, ``"503"``, ``"504"`` or ``"other"``."""
    return str(status) if status in (200, 503, 504) else "other"


def all_workers_ready(
    census: Iterable[ReadyAnswer], worker_pids: set[int], workers: int = WORKERS
) -> bool:
    """True when each of the ``workers`` workers answered ready (200) on a partition of its own."""
    ready = {a.pid: a.partitions for a in census if a.status == 200}
    partitions = [p for owned in ready.values() for p in owned]
    return (
        len(worker_pids) == workers
        and set(ready) == worker_pids
        and all(len(owned) == 1 for owned in ready.values())
        and len(set(partitions)) == workers
    )


def summarize(
    answers: Sequence[Answer],
    failures: Sequence[Failure],
    census: Sequence[ReadyAnswer],
    worker_pids: set[int],
) -> StartSummary:
    """One start's figures from its answers, its failed requests and its readiness census."""
    first_answer = min((a.answered_s for a in answers), default=None)
    first_200 = min((a.answered_s for a in answers if a.status == 200), default=None)
    before = [f for f in failures if first_answer is None or f.sent_s < first_answer]
    after = [f for f in failures if first_answer is not None and f.sent_s >= first_answer]
    steady = [a.ms for a in answers if first_200 is not None and a.sent_s >= first_200]
    ready = {a.pid: a.partitions for a in census if a.status == 200}
    return StartSummary(
        statuses=dict(Counter(status_group(a.status) for a in answers)),
        reasons=dict(Counter(f"{a.status} {a.reason}" for a in answers if a.status != 200)),
        not_listening=sum(1 for f in before if f.kind == REFUSED),
        errors_before=dict(Counter(f.kind for f in before if f.kind != REFUSED)),
        errors_after=dict(Counter(f.kind for f in after)),
        max_ms=max((a.ms for a in answers), default=0.0),
        max_ms_after_first=max(steady, default=0.0),
        first_200_s=first_200,
        workers_ready=len(ready),
        partitions=tuple(sorted(p for owned in ready.values() for p in owned)),
        all_workers=all_workers_ready(census, worker_pids),
    )


@dataclass(frozen=True)
class Totals:
    """The starts of one Kafka client, added up."""

    starts: int
    statuses: dict[str, int]
    reasons: dict[str, int]
    not_listening: int
    errors_before: int
    errors_after: int
    max_ms: float
    max_ms_after_first: float
    first_200_s: list[float] = field(default_factory=list)  # of the starts that got one
    all_workers: int = 0  # starts where every worker answered ready

    @property
    def non_200(self) -> int:
        """Answers other than 200, over every start."""
        return sum(n for status, n in self.statuses.items() if status != "200")


def total(starts: Sequence[StartSummary]) -> Totals:
    """Add up the starts of one Kafka client."""
    statuses: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for start in starts:
        statuses.update(start.statuses)
        reasons.update(start.reasons)
    return Totals(
        starts=len(starts),
        statuses=dict(statuses),
        reasons=dict(reasons),
        not_listening=sum(s.not_listening for s in starts),
        errors_before=sum(sum(s.errors_before.values()) for s in starts),
        errors_after=sum(sum(s.errors_after.values()) for s in starts),
        max_ms=max((s.max_ms for s in starts), default=0.0),
        max_ms_after_first=max((s.max_ms_after_first for s in starts), default=0.0),
        first_200_s=[s.first_200_s for s in starts if s.first_200_s is not None],
        all_workers=sum(s.all_workers for s in starts),
    )


def add_rows(result: BenchResult, case: str, totals: Totals, timeout_ms: int, logs: str) -> None:
    """The table rows of one Kafka client's starts (``logs``: where its services wrote)."""
    firsts = totals.first_200_s
    missed = totals.starts - len(firsts)
    first_note = (
        f"first 200 after p50 {fmt(percentile(firsts, 50))} s, max {fmt(max(firsts))} s"
        if firsts
        else "no start answered 200"
    ) + (f"; {missed} start(s) never answered 200" if missed else "")
    result.add(case, "504 answers", totals.statuses.get("504", 0), target="<= 0",
               note=f"{sum(totals.statuses.values()):,} answers")  # fmt: skip
    result.add(case, "max latency", totals.max_ms, "ms", target=f"<= {timeout_ms}",
               note=f"{fmt(totals.max_ms_after_first)} ms for requests sent after the "
               f"first 200; {first_note}")  # fmt: skip
    errors = f"transport errors after the first answer {totals.errors_after}" + (
        f", before it (not refusals) {totals.errors_before}" if totals.errors_before else ""
    )
    result.add(case, "non-200 answers", totals.non_200,
               note=f"statuses {totals.statuses} {totals.reasons or ''}; {errors}; "
               f"{totals.not_listening:,} refused while not listening yet (retried)")  # fmt: skip
    result.add(case, "starts with all 4 workers answering", totals.all_workers,
               f"/ {totals.starts}", target=f">= {totals.starts}",
               note="" if totals.all_workers == totals.starts else f"logs: {logs}")  # fmt: skip


def _line(s: StartSummary) -> str:
    """One start in a line of progress."""
    first = "-" if s.first_200_s is None else f"{s.first_200_s:.1f} s"
    return (
        f"first 200 {first}, statuses {s.statuses}, max {s.max_ms:.0f} ms, "
        f"workers ready {s.workers_ready} {list(s.partitions)}, errors after {s.errors_after}"
    )


# --- the load and the census (I/O) ----------------------------------------------------


@dataclass
class _Load:
    """Clients firing ``POST /predict`` at a port, from before anything listens there."""

    port: int
    clients: int = CLIENTS
    started: float = field(default_factory=time.monotonic)
    answers: list[Answer] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    first_200: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        """Start the clients (their times count from now)."""
        self.started = time.monotonic()
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        """Stop the clients once their requests in flight are answered."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(REQUEST_TIMEOUT_S + 5)

    def _client(self) -> None:
        headers = {"Content-Type": "application/json"}
        connection: http.client.HTTPConnection | None = None
        while not self.stopping.is_set():
            if connection is None:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S
                )
            sent = time.monotonic()
            try:
                connection.request("POST", "/predict", body=WRK_BODY, headers=headers)
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(Failure(sent - self.started, type(exc).__name__))
                connection.close()
                connection = None
                self.stopping.wait(RETRY_S)
                continue
            ms = (time.monotonic() - sent) * 1000
            reason = "" if response.status == 200 else _error(body)
            self.answers.append(Answer(sent - self.started, ms, response.status, reason))
            if response.status == 200:
                self.first_200.set()
        if connection is not None:
            connection.close()


def _error(body: bytes) -> str:
    """The ``error`` of a JSON error body (its first 80 characters), or its start."""
    try:
        return str(json.loads(body)["error"])[:80]
    except (ValueError, KeyError, TypeError):
        return body[:80].decode(errors="replace")


def census(port: int, rounds: int = 10, width: int = 8) -> list[ReadyAnswer]:
    """``GET /v2/health/ready`` on fresh connections, ``width`` at once, until 4 pids answer."""
    out: list[ReadyAnswer] = []
    for _ in range(rounds):
        connections = [
            http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(width)
        ]
        try:
            for connection in connections:
                connection.connect()  # all queued at once: the workers share them out
            for connection in connections:
                connection.request("GET", "/v2/health/ready")
            for connection in connections:
                response = connection.getresponse()
                body = json.loads(response.read())
                out.append(ReadyAnswer(int(body["worker"]), response.status,
                                       tuple(body.get("reply_partitions", ()))))  # fmt: skip
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            log.debug("gateway starts: a readiness request failed: %s", exc)
        finally:
            for connection in connections:
                connection.close()
        if len({a.pid for a in out}) >= WORKERS:
            break
    return out


def _wait_first_200(load: _Load, services: Supervisor) -> bool:
    """Wait for the load's first 200 while the gateway runs; False if it never came."""
    deadline = time.monotonic() + FIRST_ANSWER_WAIT_S
    while time.monotonic() < deadline:
        if load.first_200.wait(0.2):
            return True
        if services.pid("gateway") is None:
            return False
    return False


def one_start(services: Supervisor) -> tuple[StartSummary, dict[str, Any]]:
    """Start a gateway under load, load it 5 s past its first 200, stop both; the figures.

    The second value holds timings and ``disturbed``: why the start does not count
    (the gateway or the scorer exited before the bench stopped it), or "".
    """
    port = free_port()
    load = _Load(port)
    load.start()
    began = time.monotonic()
    pid = services.start(
        "gateway",
        ["gateway"],
        STREAMSCORE_GATEWAY_BIND=f"127.0.0.1:{port}",
        STREAMSCORE_LOG_LEVEL="INFO",  # when each worker read its partition and its models
    )
    if _wait_first_200(load, services):
        time.sleep(LOAD_AFTER_FIRST_S)
    load.stop()
    seen = census(port)
    worker_pids = set(process_tree(pid)) - {pid}
    gone = [name for name in ("gateway", "scorer") if services.pid(name) is None]
    stopping = time.monotonic()
    services.stop("gateway")
    info: dict[str, Any] = {
        "gateway_pid": pid,
        "start_to_load_s": began - load.started,
        "stop_s": time.monotonic() - stopping,
        "disturbed": f"{' and '.join(gone)} exited before the bench stopped it" if gone else "",
    }
    return summarize(load.answers, load.failures, seen, worker_pids), info


def _serving(services: Supervisor, tries: int = 3) -> list[dict[int, int]]:
    """Start the scorer if it does not run, and a first gateway (not counted) until it answers.

    When every worker of that gateway answers ``POST /predict``, the scorer is serving.
    A scorer that exits meanwhile is started again (``tries`` in all); the statuses
    each warm-up gateway last answered, in order.
    """
    out: list[dict[int, int]] = []
    for _ in range(tries):
        services.start("scorer", ["scorer"])
        port = free_port()
        services.start("warm-up", ["gateway"], STREAMSCORE_GATEWAY_BIND=f"127.0.0.1:{port}")
        statuses = wait_ready(port, WRK_BODY, 60)
        services.stop("warm-up")
        out.append(dict(statuses))
        if services.pid("scorer") is not None:
            break
        log.warning("gateway starts: the scorer exited; see %s", services.log_file("scorer"))
    return out


def _client_run(
    ctx: BenchContext, result: BenchResult, kafka_client: str, starts: int, timeout_ms: int
) -> None:
    """One scorer on ``kafka_client``, then ``starts`` fresh gateways in front of it."""
    bench = f"gateway-starts-{kafka_client}"
    topics: Topics = ctx.topics(bench)
    publish(ctx.settings, topics.models, default_models())
    group = f"bench-{ctx.run_id}-{bench}"
    services = ctx.supervisor(
        bench,
        topics,
        STREAMSCORE_KAFKA_CLIENT=kafka_client,
        STREAMSCORE_SCORER_GROUP=group,
        STREAMSCORE_SCORER_REQUESTS_GROUP=f"{group}-requests",
        STREAMSCORE_SCORER_METRICS_PORT="0",
        STREAMSCORE_GATEWAY_WORKERS=str(WORKERS),
        STREAMSCORE_GATEWAY_THREADS=str(THREADS),
        STREAMSCORE_LOG_LEVEL="WARNING",
    )
    warm_ups: list[list[dict[int, int]]] = []
    clean: list[StartSummary] = []
    disturbed: list[tuple[StartSummary, dict[str, Any]]] = []
    infos: list[dict[str, Any]] = []
    attempt = 0
    while len(clean) < starts and attempt < starts + SPARE_STARTS:
        attempt += 1
        if services.pid("scorer") is None:
            warm_ups.append(_serving(services))
        summary, info = one_start(services)
        print(f"{kafka_client} start {attempt}: {_line(summary)} {info['disturbed']}", flush=True)
        infos.append(info)
        if info["disturbed"]:
            disturbed.append((summary, info))
        else:
            clean.append(summary)
    services.stop("scorer")
    totals = total(clean)
    logs = str(services.log_dir)
    add_rows(result, f"{kafka_client}, {len(clean)} starts", totals, timeout_ms, logs)
    if disturbed:
        reasons = "; ".join(f"gateway {i['gateway_pid']}: {i['disturbed']}" for _, i in disturbed)
        note = f"not counted above (figures in the JSON): {reasons}; logs: {logs}"
        result.add(f"{kafka_client}, {len(clean)} starts", "starts disturbed", len(disturbed),
                   note=note)  # fmt: skip
    restarts = sum(len(tries) for tries in warm_ups) - 1
    if restarts:
        note = f"the scorer exited and was started again; see {logs}/scorer.log"
        result.add(f"{kafka_client}, {len(clean)} starts", "scorer restarts", restarts, note=note)
    result.data[kafka_client] = {
        "warm_up_statuses": warm_ups,
        "totals": totals,
        "starts": clean,
        "disturbed": [{"summary": s, **i} for s, i in disturbed],
        "timings": infos,
        "logs": logs,
    }


def run(ctx: BenchContext, config: BenchConfig) -> BenchResult:
    """Per Kafka client: ten fresh starts of a 4-worker gateway under a load of 16 clients."""
    result = BenchResult(TITLE)
    starts = env_int(ctx.env, "BENCH_GATEWAY_STARTS", STARTS, minimum=1)
    timeout_ms = GatewayConfig.from_env(ctx.env).timeout_ms
    for kafka_client in config.clients:
        _client_run(ctx, result, kafka_client, starts, timeout_ms)
    return result
