"""``streamscore demo``: run the whole pipeline once, watch it live, print a summary.

It starts the local broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` points elsewhere),
creates a fresh set of topics for this run, starts the trainer, a scorer and the
gateway, publishes points from the dummy source for a bounded run, with an abrupt
drift half way, shows model versions, the serving model, rolling scores,
throughput and lag as they change, asks the gateway for one prediction, then
stops everything it started. The summary shows the drift: where it was, which
version took over and when, each model's RMSE before and after, and a chart of
the rolling RMSE of the served predictions over the run.
Exit status 0 only when every point was predicted and nothing was dead-lettered.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from bus.clients import driver_for, make_admin
from bus.messages import ModelVersion, Prediction, Score
from bus.partitions import topic_partitions
from bus.settings import KafkaSettings
from bus.topics import TopicLayout, Topics, ensure_topics
from core.env import env_float, env_int
from core.errors import StreamscoreError
from core.logs import configure_logging
from core.stats import percentile
from streamscore.broker import BrokerConfig, LocalBroker, free_port
from streamscore.processes import Supervisor
from streamscore.services import with_bootstrap

SERVICES = ("trainer", "scorer", "gateway")
#: How long the points take to come when no rate is given (the drift needs time to show).
RUN_S = 30.0
#: The producer starts this long after the services (they start their clients first).
WARMUP_S = 6.0
STOP_ORDER = ["producer", "gateway", "scorer", "trainer"]


@dataclass(frozen=True)
class DemoConfig:
    """How big the demo run is."""

    points: int = 30_000
    rate: float = 0.0  # 0: fast enough to last about `RUN_S` (at most 3000/s)
    drift_after: int | None = None  # None: half way
    publish_every: int = 1_000
    window: int = 0  # 0: the trainer's default (forgetting and drift detection)
    timeout_s: float = 150.0

    @property
    def points_per_s(self) -> float:
        """The producer's rate: as set, or so that the run lasts about `RUN_S`."""
        return self.rate or min(3_000.0, max(self.points / RUN_S, 50.0))

    @property
    def drift_at(self) -> int:
        """The index of the first point of the new regime (half way unless set)."""
        return self.points // 2 if self.drift_after is None else self.drift_after

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DemoConfig:
        """Read ``STREAMSCORE_DEMO_*``."""
        return cls(
            points=env_int(env, "STREAMSCORE_DEMO_POINTS", cls.points, minimum=1),
            rate=env_float(env, "STREAMSCORE_DEMO_RATE", cls.rate, minimum=0.0),
            drift_after=(
                env_int(env, "STREAMSCORE_DEMO_DRIFT_AFTER", 0, minimum=0)
                if env.get("STREAMSCORE_DEMO_DRIFT_AFTER", "").strip()
                else None
            ),
            publish_every=env_int(
                env, "STREAMSCORE_DEMO_PUBLISH_EVERY", cls.publish_every, minimum=1
            ),
            window=env_int(env, "STREAMSCORE_DEMO_WINDOW", cls.window, minimum=0),
            timeout_s=env_float(env, "STREAMSCORE_DEMO_TIMEOUT_S", cls.timeout_s, minimum=10.0),
        )


@dataclass
class Monitor:
    """Reads the run's topics from their start and keeps what the display needs."""

    points: int = 0
    predicted: set[str] = field(default_factory=set)
    predictions: int = 0
    deadletters: int = 0
    versions: dict[str, list[int]] = field(default_factory=dict)
    scores: dict[str, Score] = field(default_factory=dict)
    serving: str = "-"
    first_model_at: int | None = None
    warmup_ms: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[int, tuple[str, float]] = field(default_factory=dict)  # point -> (model, error)
    drifts: dict[str, int] = field(default_factory=dict)  # model -> when the scorer found one
    recalibrated: list[int] = field(default_factory=list)  # points served a + b * output

    def add(self, topic: str, value: bytes | None, timestamp: int, topics: Topics) -> None:
        """Account for one record of one of the run's topics."""
        if topic == topics.points:
            self.points += 1
        elif topic == topics.predictions and value is not None:
            prediction = Prediction.from_bytes(value)
            self.predictions += 1
            self.predicted.add(prediction.id)
            self.serving = f"{prediction.model} v{prediction.version}"
            index = _index(prediction.id)
            if prediction.y is not None and index is not None:
                self.errors[index] = (self.serving, prediction.prediction - prediction.y)
            if prediction.calibration is not None and index is not None:
                self.recalibrated.append(index)
            waited = self.first_model_at is None or prediction.ts < self.first_model_at
            (self.warmup_ms if waited else self.latencies_ms).append(timestamp - prediction.ts)
        elif topic == topics.models and value is not None:
            model = ModelVersion.from_bytes(value)
            if self.first_model_at is None:
                self.first_model_at = timestamp
            self.versions.setdefault(model.name, []).append(model.version)
        elif topic == topics.scores and value is not None:
            score = Score.from_bytes(value)
            self.scores[score.model] = score
            if score.drift and score.drift_at is not None:
                self.drifts[f"{score.model} v{score.version}"] = score.drift_at
        elif topic == topics.deadletter:
            self.deadletters += 1


class Watcher:
    """Follows every partition of the run's topics with one group-less consumer."""

    def __init__(self, settings: KafkaSettings, topics: Topics) -> None:
        self._topics = topics
        self.monitor = Monitor()
        self._consumer = driver_for(settings).consumer(group_id=None)
        try:
            names = [topics.points, topics.predictions, topics.models, topics.scores]
            partitions = topic_partitions(self._consumer, [*names, topics.deadletter])
            self._consumer.assign(partitions)
            self._consumer.seek_to_beginning(partitions)
        except BaseException:
            self._consumer.close()
            raise

    def poll(self, timeout_s: float = 0.2) -> None:
        """Read what arrived."""
        for record in self._consumer.poll(timeout_s):
            self.monitor.add(record.topic, record.value, record.timestamp, self._topics)

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()


class Display:
    """Shows the run's state: redrawn in place on a terminal, a block every few seconds else."""

    def __init__(self, out: TextIO, started: float) -> None:
        self._out = out
        self._tty = out.isatty()
        self._started = started
        self._lines = 0
        self._last = (started, 0, 0)
        self._printed_at = 0.0

    def show(self, m: Monitor, now: float, *, force: bool = False) -> None:
        """Draw the current state (every 5 s off a terminal, unless forced)."""
        if not (self._tty or force) and now - self._printed_at < 5.0:
            return
        then, points_then, predictions_then = self._last
        span = max(now - then, 1e-6)
        self._last = (now, m.points, m.predictions)
        self._printed_at = now
        lines = [
            f"[{now - self._started:6.1f}s] points {m.points:>7}  "
            f"({(m.points - points_then) / span:>6.0f}/s)   "
            f"predictions {len(m.predicted):>7} "
            f"({(m.predictions - predictions_then) / span:>6.0f}/s)"
            f"   lag {max(m.points - len(m.predicted), 0):>6}   dead letters {m.deadletters}",
            f"          serving {m.serving}   versions "
            + (", ".join(f"{n} v{max(v)}" for n, v in sorted(m.versions.items())) or "none yet"),
        ]
        for name, score in sorted(m.scores.items()):
            lines.append(
                f"          {name:<13} v{score.version:<3} rolling R2 {_fmt(score.r2)}  "
                f"RMSE {_fmt(score.rmse)}  MAE {_fmt(score.mae)}  (last {score.count})"
                + ("  DRIFT" if score.drift else "")
            )
        if self._tty and self._lines:
            self._out.write(f"\x1b[{self._lines}F\x1b[J")
        self._out.write("\n".join(lines) + "\n" + ("" if self._tty else "\n"))
        self._out.flush()
        self._lines = len(lines)


def _index(point_id: str) -> int | None:
    """The dummy source's point number from its id (``p-000123`` -> 123)."""
    digits = point_id.rpartition("-")[2]
    return int(digits) if digits.isdigit() else None


BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 60) -> str:
    """A line of unicode blocks, one per cell of ``width`` (each the mean of its values)."""
    if not values:
        return ""
    size = max(1, -(-len(values) // width))
    cells = [
        sum(values[i : i + size]) / len(values[i : i + size]) for i in range(0, len(values), size)
    ]
    top = max(cells) or 1.0
    return "".join(BARS[min(len(BARS) - 1, round(c / top * (len(BARS) - 1)))] for c in cells)


def _rmse(errors: list[float]) -> str:
    return "-" if not errors else f"{math.sqrt(sum(e * e for e in errors) / len(errors)):.4f}"


def drift_report(m: Monitor, drift_at: int, span: int = 1000) -> list[str]:
    """The drift: where, who took over and when, RMSE per model around it, a chart."""
    if not m.errors:
        return ["  drift            no labelled prediction seen"]
    points = sorted(m.errors)
    lines = [f"  drift            at point {drift_at} (the function changes there)"]
    before = m.errors.get(max((p for p in points if p < drift_at), default=-1), ("-", 0.0))[0]
    takeover = next(
        ((p, name) for p in points if p >= drift_at and (name := m.errors[p][0]) != before), None
    )
    if takeover is None:
        lines.append(f"  took over        nobody: {before} served to the end")
    else:
        lines.append(
            f"  took over        {takeover[1]} at point {takeover[0]} "
            f"({takeover[0] - drift_at} points after the drift; {before} served before)"
        )
    if m.recalibrated:
        first, last = min(m.recalibrated), max(m.recalibrated)
        lines.append(
            f"  recalibrated     {len(m.recalibrated)} predictions, points {first}-{last} "
            f"(a + b x the serving version's output, from {first - drift_at} points after "
            "the drift)"
        )
    for name, at in sorted(m.drifts.items()):
        lines.append(f"  scorer found     a drift in the residuals of {name} (ts {at})")
    models = sorted({name.split(" v")[0] for name, _ in m.errors.values()})
    windows = {
        "before": [p for p in points if drift_at - span <= p < drift_at],
        "just after": [p for p in points if drift_at <= p < drift_at + span],
        "at the end": points[-span:],
    }
    for label, chosen in windows.items():
        cells = []
        for model in models:
            errs = [m.errors[p][1] for p in chosen if m.errors[p][0].split(" v")[0] == model]
            cells.append(f"{model} {_rmse(errs)} ({len(errs)})")
        lines.append(f"  RMSE {label:<11} " + ", ".join(cells))
    rolling = _rolling([abs(m.errors[p][1]) for p in points], 200)
    lines.append(f"  rolling RMSE     {sparkline(rolling)}  (served predictions, in point order;")
    lines.append(
        f"                   max {max(rolling):.3g}, drift at {drift_at / points[-1]:.0%})"
    )
    return lines


def _rolling(abs_errors: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, e in enumerate(abs_errors):
        total += e * e
        if i >= window:
            total -= abs_errors[i - window] ** 2
        out.append(math.sqrt(max(total, 0.0) / min(i + 1, window)))
    return out


def _latency(values: list[float]) -> str:
    if not values:
        return "-"
    return (
        f"p50 {percentile(values, 50):.0f}, p95 {percentile(values, 95):.0f}, "
        f"p99 {percentile(values, 99):.0f}, max {max(values):.0f}"
    )


def _fmt(value: float | None) -> str:
    return "   -   " if value is None else f"{value:7.4f}"


def ask_gateway(bind: str, x: list[float], timeout_s: float = 30.0) -> dict[str, Any]:
    """POST /predict, retrying while the gateway warms up (503, 504); return its JSON answer."""
    request = urllib.request.Request(
        f"http://{bind}/predict",
        data=json.dumps({"x": x}).encode(),
        headers={"Content-Type": "application/json"},
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                result: dict[str, Any] = json.loads(answer.read())
                return result
        except urllib.error.HTTPError as exc:
            if exc.code not in (503, 504) or time.monotonic() > deadline:
                raise StreamscoreError(f"gateway answered {exc.code}: {exc.read()!r}") from exc
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() > deadline:
                raise StreamscoreError(f"the gateway at {bind} did not answer: {exc}") from exc
        time.sleep(0.5)


@dataclass
class DemoRun:
    """One demo run: its names, its processes, and what it saw."""

    env: dict[str, str]
    config: DemoConfig
    out: TextIO = sys.stdout

    def run(self) -> int:
        """Run, watch, summarise, stop; the exit status."""
        run_id = uuid.uuid4().hex[:8]
        broker_config = BrokerConfig.from_env(self.env)
        local = not self.env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
        broker = LocalBroker(broker_config)
        started_broker = local and broker.status().state != "up"
        if local:
            self._say(broker.up().describe())
        gateway_bind = f"127.0.0.1:{free_port()}"
        env = {
            **with_bootstrap(self.env),
            "STREAMSCORE_TOPIC_PREFIX": f"demo-{run_id}.",
            "STREAMSCORE_TRAINER_GROUP": f"demo-{run_id}-trainer",
            "STREAMSCORE_TRAINER_TRANSACTIONAL_ID": f"demo-{run_id}-trainer",
            "STREAMSCORE_TRAINER_PUBLISH_EVERY": str(self.config.publish_every),
            "STREAMSCORE_TRAINER_WINDOW": str(self.config.window),
            "STREAMSCORE_SCORER_GROUP": f"demo-{run_id}-scorer",
            "STREAMSCORE_SCORER_REQUESTS_GROUP": f"demo-{run_id}-requests",
            "STREAMSCORE_SCORER_SCORES_INTERVAL_S": "1",
            "STREAMSCORE_GATEWAY_BIND": gateway_bind,
            "STREAMSCORE_GATEWAY_WORKERS": "2",
        }
        settings = KafkaSettings.from_env(env)
        topics = Topics.from_env(env)
        ensure_topics(settings, topics, TopicLayout.from_env(env))
        services = Supervisor(
            broker_config.home / "demo" / run_id,
            broker_config.home / "logs" / f"demo-{run_id}",
            env,
        )
        self._say(f"run {run_id}: topics demo-{run_id}.*, logs in {services.log_dir}")
        watcher = Watcher(settings, topics)
        try:
            return self._watch(services, watcher, gateway_bind)
        finally:
            watcher.close()
            stopped = services.stop_all(STOP_ORDER)
            self._say(f"stopped {', '.join(stopped) or 'nothing'}")
            _delete_topics(settings, topics)
            if started_broker:
                broker.down()
                self._say("kafka stopped")

    def _watch(self, services: Supervisor, watcher: Watcher, gateway_bind: str) -> int:
        for name in SERVICES:
            services.start(name, [name])
        self._say(f"services starting; points follow in {WARMUP_S:.0f} s")
        warm_until = time.monotonic() + WARMUP_S
        while time.monotonic() < warm_until:
            watcher.poll(0.2)
        services.start(
            "producer",
            ["producer"],
            STREAMSCORE_PRODUCER_COUNT=str(self.config.points),
            STREAMSCORE_PRODUCER_RATE=str(self.config.points_per_s),
            STREAMSCORE_PRODUCER_DRIFT_AFTER=str(self.config.drift_at),
            STREAMSCORE_PRODUCER_FEATURES="2",
            STREAMSCORE_PRODUCER_PROGRESS_INTERVAL="3600",
        )
        started = time.monotonic()
        display = Display(self.out, started)
        m = watcher.monitor
        answer: dict[str, Any] | str | None = None
        deadline = started + self.config.timeout_s
        while time.monotonic() < deadline:
            watcher.poll()
            display.show(m, time.monotonic())
            crashed = [n for n in SERVICES if services.exited(n)]
            if crashed:
                self._say(f"FAILED: {', '.join(crashed)} exited; see {services.log_dir}")
                return 1
            if answer is None and m.versions and m.points >= self.config.points // 2:
                answer = self._ask(gateway_bind)
            producer_done = services.pid("producer") is None
            if producer_done and m.points and len(m.predicted) >= m.points and answer is not None:
                break
        for _ in range(10):  # the last scores and dead letters
            watcher.poll(0.1)
        display.show(m, time.monotonic(), force=True)
        return self._summary(m, answer, time.monotonic() - started)

    def _ask(self, gateway_bind: str) -> dict[str, Any] | str:
        x = [0.5, -0.25]
        try:
            answer = ask_gateway(gateway_bind, x)
        except (StreamscoreError, urllib.error.URLError, OSError, ValueError) as exc:
            self._say(f"gateway: no answer: {exc}")
            return str(exc)
        self._say(f"gateway: POST /predict {{'x': {x}}} -> {json.dumps(answer)}")
        return answer

    def _summary(self, m: Monitor, answer: dict[str, Any] | str | None, elapsed: float) -> int:
        missing = max(m.points - len(m.predicted), 0)
        healthy = (
            m.points >= self.config.points
            and missing == 0
            and m.deadletters == 0
            and isinstance(answer, dict)
        )
        lines = [
            "",
            "summary",
            f"  elapsed          {elapsed:.1f} s",
            f"  points in        {m.points}",
            f"  predictions out  {len(m.predicted)} distinct ids ({m.predictions} messages)"
            + (f", {missing} MISSING" if missing else ""),
            f"  dead letters     {m.deadletters}",
            "  model versions   "
            + (
                ", ".join(
                    f"{n}: {len(v)} (latest v{max(v)})" for n, v in sorted(m.versions.items())
                )
                or "none"
            ),
        ]
        for name, s in sorted(m.scores.items()):
            lines.append(
                f"  final score      {name} v{s.version}: R2 {_fmt(s.r2).strip()}, "
                f"RMSE {_fmt(s.rmse).strip()}, MAE {_fmt(s.mae).strip()} over the last "
                f"{s.count} labelled points"
            )
        lines += drift_report(m, self.config.drift_at)
        lines.append(
            f"  latency (ms)     {_latency(m.latencies_ms)}  (point ts -> prediction appended)"
        )
        lines.append(
            f"  while no model   {_latency(m.warmup_ms)}  ({len(m.warmup_ms)} points held until "
            "the first model version)"
        )
        lines.append(f"  gateway          {json.dumps(answer) if answer else 'not asked'}")
        lines.append(f"  result           {'HEALTHY' if healthy else 'UNHEALTHY'}")
        self._say("\n".join(lines))
        return 0 if healthy else 1

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def _delete_topics(settings: KafkaSettings, topics: Topics) -> None:
    admin = make_admin(settings)
    try:
        admin.delete_topics(list(topics.all().values()))
    except Exception as exc:  # cleanup is best effort: the run's result stands
        print(f"could not delete the run's topics: {exc}", file=sys.stderr)
    finally:
        admin.close()


def main(argv: list[str]) -> int:
    """Run the demo once."""
    parser = argparse.ArgumentParser(prog="streamscore demo", description=__doc__)
    parser.add_argument("--points", type=int, help="how many points to publish")
    parser.add_argument("--rate", type=float, help="points per second")
    args = parser.parse_args(argv)
    configure_logging("demo", os.environ.get("STREAMSCORE_LOG_LEVEL", "WARNING"))
    env = dict(os.environ)
    if args.points:
        env["STREAMSCORE_DEMO_POINTS"] = str(args.points)
    if args.rate:
        env["STREAMSCORE_DEMO_RATE"] = str(args.rate)
    try:
        return DemoRun(env, DemoConfig.from_env(env)).run()
    except StreamscoreError as exc:
        print(f"streamscore demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("streamscore demo: interrupted; everything it started was stopped", file=sys.stderr)
        return 130
