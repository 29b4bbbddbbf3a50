"""2. Pass-through, 3. the Quix Streams peer and 4. the scorer, over the same pre-filled topics.

Every run reads one of the run's pre-filled ``points`` topics (one per partition
count, ``BENCH_PARTITIONS``) from its start, in a process of its own with its own
consumer group and its own output topic (same partition count, ``LogAppendTime``):

- the pass-through (`bench.passthrough`): the stream kernel with an identity step,
  on each Kafka client (``STREAMSCORE_KAFKA_CLIENT``), at-least-once;
- the peer (`bench.peers.quix_scorer`): the scorer's job as a Quix Streams app
  (confluent-kafka underneath), at-least-once; skipped, with the reason printed,
  when ``quixstreams`` is not installed;
- the scorer as users run it (``python -m streamscore scorer``) on each client,
  at-least-once, and exactly-once at the largest partition count. It serves one
  linear model, the one the peer is given.

Figures: points/s (output records over the span of their append times) and CPU per
point (the process's CPU time, all threads and children, from its first output to
its last, per output record); then the target ratios of the same run.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable

from bench.config import BenchConfig
from bench.context import BenchContext, stop_process
from bench.data import Dataset, dataset
from bench.models import model_version, publish
from bench.pipes import PipeRun, measure_pipe
from bench.report import BenchResult, ratio
from bus.messages import ModelVersion

log = logging.getLogger(__name__)

APPENDED = {"message.timestamp.type": "LogAppendTime"}
SHORT = {"at-least-once": "alo", "exactly-once": "eos"}
PEER = "Quix Streams"
#: a run of the scorer: (client, partitions, delivery)
ScorerKey = tuple[str, int, str]


def case(client: str, partitions: int, delivery: str = "") -> str:
    """``"confluent, 4 partitions"`` (with the delivery when it is not at-least-once)."""
    text = f"{client}, {partitions} partition{'s' if partitions != 1 else ''}"
    return f"{text}, {delivery}" if delivery and delivery != "at-least-once" else text


def serving_model() -> ModelVersion:
    """The one model the scorer serves and the peer is given: linear, fitted on the data."""
    return model_version("multivariate", 1, "multivariate")


def _output(ctx: BenchContext, data: Dataset, name: str) -> str:
    """A fresh ``LogAppendTime`` output topic beside the dataset, as many partitions."""
    return ctx.create_topic(data.prefix + name, data.partitions, APPENDED)


def _measure(
    ctx: BenchContext,
    config: BenchConfig,
    data: Dataset,
    *,
    pid: int,
    group: str,
    output: str,
    alive: Callable[[], bool],
) -> PipeRun:
    return measure_pipe(
        ctx.settings,
        pid=pid,
        group=group,
        output=output,
        count=data.count,
        timeout_s=config.timeout_s,
        alive=alive,
    )


def _rows(result: BenchResult, name: str, run: PipeRun) -> None:
    result.add(name, "points/s", run.rate, "pts/s")
    result.add(
        name, "CPU per point", run.cpu_us_per_record, "µs", note=f"{run.cpu_share:.2f} cores busy"
    )


# --- 2. the pass-through ---------------------------------------------------------------


def passthrough_runs(ctx: BenchContext, config: BenchConfig) -> dict[tuple[str, int], PipeRun]:
    """(client, partitions) -> the kernel pass-through's run (measured once per bench run)."""
    if "passthrough" in ctx.shared:
        known: dict[tuple[str, int], PipeRun] = ctx.shared["passthrough"]
        return known
    runs: dict[tuple[str, int], PipeRun] = {}
    for partitions in config.partitions:
        data = dataset(ctx, config.points, partitions)
        for client in config.clients:
            name = f"passthrough-{client}"
            target = _output(ctx, data, name)
            group = f"bench-{ctx.run_id}-{partitions}-{name}"
            env = ctx.service_env(data.topics, STREAMSCORE_KAFKA_CLIENT=client)
            args = ["-m", "bench.passthrough", data.topics.points, target, "--group", group]
            process = ctx.spawn(f"{name}-{partitions}", args, env)
            try:
                runs[client, partitions] = _measure(
                    ctx,
                    config,
                    data,
                    pid=process.pid,
                    group=group,
                    output=target,
                    alive=lambda: process.poll() is None,  # noqa: B023 (called in this iteration)
                )
            finally:
                stop_process(process)
            log.info("pass-through %s: %s", case(client, partitions), runs[client, partitions])
    ctx.shared["passthrough"] = runs
    return runs


def run_passthrough(ctx: BenchContext, config: BenchConfig) -> BenchResult:
    """2. Pass-through: the ceiling of the kernel's consume-produce loop on each client."""
    result = BenchResult("2. pass-through")
    for (client, partitions), run in passthrough_runs(ctx, config).items():
        _rows(result, case(client, partitions), run)
        result.data[case(client, partitions)] = run
    return result


# --- 3. the peer -----------------------------------------------------------------------


def peer_missing() -> str | None:
    """Why the peer cannot run here (None when it can)."""
    if importlib.util.find_spec("quixstreams") is None:
        return "quixstreams is not installed: pip install 'streamscore[bench]' (or make bench)"
    return None


def peer_runs(ctx: BenchContext, config: BenchConfig) -> dict[int, PipeRun]:
    """partitions -> the Quix Streams app's run (empty when it cannot run here)."""
    if "peer" in ctx.shared:
        known: dict[int, PipeRun] = ctx.shared["peer"]
        return known
    runs: dict[int, PipeRun] = {}
    if peer_missing() is None:
        model = ctx.home / "peer-model.json"
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(serving_model().to_bytes())
        for partitions in config.partitions:
            data = dataset(ctx, config.points, partitions)
            target = _output(ctx, data, "peer-quix")
            group = f"bench-{ctx.run_id}-{partitions}-peer-quix"
            args = ["-m", "bench.peers.quix_scorer", data.topics.points, target]
            args += ["--group", group, "--model", str(model)]
            args += ["--state-dir", str(ctx.home / f"quix-state-{partitions}")]
            process = ctx.spawn(f"peer-quix-{partitions}", args, ctx.service_env(data.topics))
            try:
                runs[partitions] = _measure(
                    ctx,
                    config,
                    data,
                    pid=process.pid,
                    group=group,
                    output=target,
                    alive=lambda: process.poll() is None,  # noqa: B023 (called in this iteration)
                )
            finally:
                stop_process(process)
            log.info("%s, %d partitions: %s", PEER, partitions, runs[partitions])
    ctx.shared["peer"] = runs
    return runs


def run_peer(ctx: BenchContext, config: BenchConfig) -> BenchResult:
    """3. The scorer's job as a Quix Streams app (skipped when quixstreams is missing)."""
    result = BenchResult(f"3. peer: {PEER}")
    missing = peer_missing()
    if missing is not None:
        print(f"skipped: {missing}", flush=True)
        result.add(PEER, "skipped", None, note=missing)
        return result
    for partitions, run in peer_runs(ctx, config).items():
        _rows(result, case("confluent-kafka (Quix)", partitions), run)
        result.data[str(partitions)] = run
    return result


# --- 4. the scorer ---------------------------------------------------------------------


def scorer_cases(config: BenchConfig) -> list[ScorerKey]:
    """Every client at every partition count at-least-once; exactly-once at the most."""
    keys = [(c, p, "at-least-once") for p in config.partitions for c in config.clients]
    if config.scorer_exactly_once:
        keys += [(c, max(config.partitions), "exactly-once") for c in config.clients]
    return keys


def scorer_runs(ctx: BenchContext, config: BenchConfig) -> dict[ScorerKey, PipeRun]:
    """(client, partitions, delivery) -> ``streamscore scorer``'s run."""
    runs: dict[ScorerKey, PipeRun] = {}
    published: set[int] = set()
    for client, partitions, delivery in scorer_cases(config):
        data = dataset(ctx, config.points, partitions)
        if partitions not in published:
            publish(ctx.settings, data.topics.models, [serving_model()])
            published.add(partitions)
        name = f"scorer-{client}-{SHORT[delivery]}"
        target = _output(ctx, data, name)
        group = f"bench-{ctx.run_id}-{partitions}-{name}"
        services = ctx.supervisor(
            f"{name}-{partitions}",
            data.topics,
            STREAMSCORE_KAFKA_CLIENT=client,
            STREAMSCORE_TOPIC_PREDICTIONS=target,
            STREAMSCORE_SCORER_GROUP=group,
            STREAMSCORE_SCORER_REQUESTS_GROUP=group + "-requests",
            STREAMSCORE_SCORER_DELIVERY=delivery,
            STREAMSCORE_SCORER_TRANSACTIONAL_ID=group,
        )
        pid = services.start("scorer", ["scorer"])
        try:
            runs[client, partitions, delivery] = _measure(
                ctx,
                config,
                data,
                pid=pid,
                group=group,
                output=target,
                alive=lambda: services.pid("scorer") is not None,  # noqa: B023
            )
        finally:
            services.stop("scorer")
        log.info(
            "scorer %s: %s", case(client, partitions, delivery), runs[client, partitions, delivery]
        )
    return runs


def run_scorer(ctx: BenchContext, config: BenchConfig) -> BenchResult:
    """4. The scorer on each client, then its ratios to the pass-through and to the peer."""
    result = BenchResult("4. scorer")
    passthrough = passthrough_runs(ctx, config)
    peer = peer_runs(ctx, config)
    runs = scorer_runs(ctx, config)
    for (client, partitions, delivery), run in runs.items():
        _rows(result, case(client, partitions, delivery), run)
        result.data[case(client, partitions, delivery)] = run
    for partitions in config.partitions:
        ratios(result, partitions, runs, passthrough, peer.get(partitions))
    return result


def ratios(
    result: BenchResult,
    partitions: int,
    scorer: dict[ScorerKey, PipeRun],
    passthrough: dict[tuple[str, int], PipeRun],
    peer: PipeRun | None,
) -> None:
    """The target ratios at one partition count (rows with a dash where a run is missing)."""
    where = f"{partitions} partition{'s' if partitions != 1 else ''}"
    confluent = scorer.get(("confluent", partitions, "at-least-once"))
    python = scorer.get(("kafka-python", partitions, "at-least-once"))
    if confluent is not None:
        rate = cpu = None
        rate_note = cpu_note = f"{PEER} did not run"
        if peer is not None:
            rate = ratio(confluent.rate, peer.rate)
            cpu = ratio(peer.cpu_us_per_record, confluent.cpu_us_per_record)
            rate_note = f"{confluent.rate:,.0f} vs {peer.rate:,.0f} pts/s"
            cpu_note = f"{confluent.cpu_us_per_record:.1f} vs {peer.cpu_us_per_record:.1f} µs"
        result.add(
            where,
            f"scorer on confluent / {PEER}, points/s",
            rate,
            "x",
            target=">= 1.5",
            note=rate_note,
        )
        result.add(
            where,
            f"{PEER} / scorer on confluent, CPU per point",
            cpu,
            "x",
            target=">= 1.5",
            note=cpu_note,
        )
    checks = (("kafka-python", python, ">= 0.85"), ("confluent", confluent, ""))
    for client, found, target in checks:
        base = passthrough.get((client, partitions))
        if found is None or base is None:
            continue
        result.add(
            where,
            f"scorer / pass-through on {client}, points/s",
            ratio(found.rate, base.rate),
            "x",
            target=target,
            note=f"{found.rate:,.0f} vs {base.rate:,.0f} pts/s; CPU "
            f"{found.cpu_us_per_record:.1f} vs {base.cpu_us_per_record:.1f} µs",
        )
