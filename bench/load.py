"""HTTP load: N keep-alive clients, each sending one request after the other, for a bounded run.

The clients are threads, shared out between a few processes (one per core by
default) so that one interpreter's lock does not become the bottleneck being
measured. Every client has its own ``http.client`` connection (loopback,
keep-alive); each request's latency is taken from just before it is sent to just
after its answer is read. A run stops at a deadline or after a number of
requests, whichever comes first, and every process starts at the same instant.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.report import Latency, ratio


@dataclass
class LoadResult:
    """What a load run saw: per-request latencies of the good answers, statuses, duration."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    started: float = 0.0  # epoch seconds
    ended: float = 0.0

    @property
    def ok(self) -> int:
        """Answers with status 200."""
        return self.statuses.get(200, 0)

    @property
    def seconds(self) -> float:
        """From the common start to the last answer."""
        return max(self.ended - self.started, 0.0)

    @property
    def rate(self) -> float:
        """Good answers per second."""
        return ratio(self.ok, self.seconds)

    @property
    def latency(self) -> Latency:
        """p50 / p99 / max of the good answers."""
        return Latency.of(self.latencies_ms)

    def merge(self, other: LoadResult) -> None:
        """Add another process's results."""
        self.latencies_ms += other.latencies_ms
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)
        self.started = min(self.started or other.started, other.started)
        self.ended = max(self.ended, other.ended)


@dataclass(frozen=True)
class Plan:
    """One load run: where to send what, from when, for how long, how many requests at most."""

    host: str
    port: int
    path: str
    bodies: list[bytes]
    start_at: float  # epoch seconds
    seconds: float
    max_requests: int


class _Budget:
    """Requests left to send, shared by one process's clients."""

    def __init__(self, requests: int) -> None:
        self._left = requests
        self._lock = threading.Lock()
        self.out = LoadResult()

    def take(self) -> bool:
        with self._lock:
            self._left -= 1
            return self._left >= 0

    def add(self, latencies: list[float], statuses: Counter[int], errors: Counter[str]) -> None:
        with self._lock:
            self.out.latencies_ms += latencies
            self.out.statuses.update(statuses)
            self.out.errors.update(errors)
            self.out.ended = max(self.out.ended, time.time())


def _client(plan: Plan, budget: _Budget) -> None:
    """One client: send requests until the deadline or until the shared budget is spent."""
    connection = http.client.HTTPConnection(plan.host, plan.port, timeout=30)
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    deadline = plan.start_at + plan.seconds
    i = 0
    time.sleep(max(plan.start_at - time.time(), 0.0))
    while time.time() < deadline and budget.take():
        body = plan.bodies[i % len(plan.bodies)]
        i += 1
        began = time.perf_counter()
        try:
            connection.request("POST", plan.path, body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
        except (OSError, http.client.HTTPException) as exc:
            errors[type(exc).__name__] += 1
            connection.close()
            connection = http.client.HTTPConnection(plan.host, plan.port, timeout=30)
            continue
        elapsed_ms = (time.perf_counter() - began) * 1000
        statuses[answer.status] += 1
        if answer.status == 200:
            latencies.append(elapsed_ms)
    connection.close()
    budget.add(latencies, statuses, errors)


def _process(plan: Plan, clients: int) -> LoadResult:
    """One load process: ``clients`` threads sharing the plan's request budget."""
    budget = _Budget(plan.max_requests)
    threads = [
        threading.Thread(target=_client, args=(plan, budget), daemon=True) for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(plan.seconds + 60)
    budget.out.started = plan.start_at
    return budget.out


def split(total: int, parts: int) -> list[int]:
    """``total`` shared out as evenly as possible between ``parts`` (none of them empty)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_load(
    host: str,
    port: int,
    path: str,
    bodies: Sequence[bytes],
    *,
    clients: int,
    seconds: float,
    max_requests: int,
    processes: int | None = None,
) -> LoadResult:
    """``clients`` concurrent keep-alive clients for ``seconds`` (or ``max_requests`` in all)."""
    shares = split(clients, processes or os.cpu_count() or 1)
    budgets = split(max_requests, len(shares))
    start_at = time.time() + 1.5  # every process is up (spawned) by then
    plans = [Plan(host, port, path, list(bodies), start_at, seconds, budget) for budget in budgets]
    context = multiprocessing.get_context("spawn")
    with context.Pool(len(shares)) as pool:
        parts = pool.starmap(_process, zip(plans, shares, strict=True))
    total = LoadResult(started=start_at)
    for part in parts:
        total.merge(part)
    return total


def predict_bodies(count: int = 64, features: int = 3) -> list[bytes]:
    """``POST /predict`` bodies ``{"x": [...]}`` with varied features."""
    return [
        json.dumps({"x": [((i * 7 + j * 3) % 19) / 10 - 0.9 for j in range(features)]}).encode()
        for i in range(count)
    ]


# --- wrk ----------------------------------------------------------------------------

WRK_SCRIPT = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""


def wrk_missing() -> str | None:
    """Why wrk cannot run here (None when it can)."""
    import shutil

    if shutil.which("wrk") is None:
        return "wrk is not installed (Debian: apt-get install -y wrk)"
    return None


def _wrk_ms(text: str) -> float:
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
    for unit in ("us", "ms", "s", "m"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def wrk_load(
    host: str, port: int, path: str, body: bytes, *, connections: int, seconds: float
) -> tuple[float, float, float, int]:
    """Run wrk with ``connections`` keep-alive connections: (req/s, p50 ms, p99 ms, non-2xx)."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT.format(body=json.dumps(body.decode())))
        script.flush()
        threads = max(1, min(connections, os.cpu_count() or 1))
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
             "--latency", "-s", script.name, f"http://{host}:{port}{path}"],
            capture_output=True, text=True, check=True, timeout=seconds + 30,
        ).stdout  # fmt: skip
    rate = p50 = p99 = 0.0
    failed = 0
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            rate = float(words[1])
        elif words[:1] == ["50%"]:
            p50 = _wrk_ms(words[1])
        elif words[:1] == ["99%"]:
            p99 = _wrk_ms(words[1])
        elif line.strip().startswith("Non-2xx"):
            failed += int(words[-1])
    return rate, p50, p99, failed
