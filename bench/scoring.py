"""2. Pass-through and 3. scorer throughput, over the same pre-filled ``points`` topic.

Each run is a process of its own with its own consumer group and output topic
(created with ``LogAppendTime``), for at-least-once and for exactly-once. The
scorer runs as users run it (``python -m streamscore scorer``) with the two models
the default trainer publishes (multivariate serves, polynomial is scored beside
it on the labelled points). Figures: points/s (output records over the span of
their append times), the process's CPU time per point, and the scorer's rate as
a fraction of the pass-through's in the same mode.
"""

from __future__ import annotations

import logging

from bench.config import BenchConfig
from bench.context import BenchContext, stop_process
from bench.data import Dataset, dataset
from bench.models import default_models, publish
from bench.pipes import PipeRun, measure_pipe
from bench.report import BenchResult, ratio
from bus.topics import Topics, ensure_topics

log = logging.getLogger(__name__)

MODES = ("at-least-once", "exactly-once")
APPENDED = {"message.timestamp.type": "LogAppendTime"}
SHORT = {"at-least-once": "alo", "exactly-once": "eos"}


def passthrough_runs(ctx: BenchContext, config: BenchConfig) -> dict[str, PipeRun]:
    """The pass-through's run in each mode (measured once per benchmark run)."""
    if "passthrough" in ctx.shared:
        runs: dict[str, PipeRun] = ctx.shared["passthrough"]
        return runs
    data = dataset(ctx, config.points)
    runs = {}
    for mode in MODES:
        name = f"passthrough-{SHORT[mode]}"
        target = ctx.create_topic(ctx.prefix("data") + name, data.partitions, APPENDED)
        group = f"bench-{ctx.run_id}-{name}"
        args = ["-m", "bench.passthrough", data.topics.points, target, "--group", group]
        if mode == "exactly-once":
            args += ["--transactional-id", group]
        env = ctx.service_env(data.topics)
        process = ctx.spawn(name, args, env)
        try:
            runs[mode] = measure_pipe(
                ctx.settings,
                pid=process.pid,
                group=group,
                output=target,
                count=data.count,
                timeout_s=config.timeout_s,
                alive=lambda: process.poll() is None,  # noqa: B023 (called in this iteration)
            )
        finally:
            stop_process(process)
        log.info("pass-through %s: %s", mode, runs[mode])
    ctx.shared["passthrough"] = runs
    return runs


def run_passthrough(ctx: BenchContext, config: BenchConfig) -> BenchResult:
    """2. Pass-through: the ceiling of a Python consume-produce loop on kafka-python."""
    result = BenchResult("2. pass-through")
    for mode, run in passthrough_runs(ctx, config).items():
        _rows(result, mode, run)
        result.data[mode] = run
    return result


def _rows(result: BenchResult, case: str, run: PipeRun, target: str = "") -> None:
    result.add(case, "points/s", run.rate, "pts/s", target=target)
    result.add(
        case, "CPU per point", run.cpu_us_per_record, "µs", note=f"{run.cpu_share:.2f} cores busy"
    )


def _scorer_topics(data: Dataset, mode: str) -> Topics:
    prefix = data.topics.points[: -len("points")]
    return Topics.with_prefix(prefix, predictions=f"{prefix}predictions-{SHORT[mode]}")


def run_scorer(ctx: BenchContext, config: BenchConfig) -> BenchResult:
    """3. Scorer throughput beside the pass-through, in both modes."""
    result = BenchResult("3. scorer")
    passthrough = passthrough_runs(ctx, config)
    data = dataset(ctx, config.points)
    publish(ctx.settings, data.topics.models, default_models())
    for mode in MODES:
        topics = _scorer_topics(data, mode)
        ensure_topics(ctx.settings, topics)
        ctx.track(topics.predictions)
        group = f"bench-{ctx.run_id}-scorer-{SHORT[mode]}"
        services = ctx.supervisor(
            f"scorer-{SHORT[mode]}",
            data.topics,
            STREAMSCORE_TOPIC_PREDICTIONS=topics.predictions,
            STREAMSCORE_SCORER_GROUP=group,
            STREAMSCORE_SCORER_REQUESTS_GROUP=group + "-requests",
            STREAMSCORE_SCORER_DELIVERY=mode,
            STREAMSCORE_SCORER_TRANSACTIONAL_ID=group,
        )
        pid = services.start("scorer", ["scorer"])
        try:
            run = measure_pipe(
                ctx.settings,
                pid=pid,
                group=group,
                output=topics.predictions,
                count=data.count,
                timeout_s=config.timeout_s,
                alive=lambda: services.pid("scorer") is not None,  # noqa: B023
            )
        finally:
            services.stop("scorer")
        log.info("scorer %s: %s", mode, run)
        _rows(result, mode, run, target=">= 50000")
        base = passthrough[mode]
        result.add(
            mode,
            "rate / pass-through",
            ratio(run.rate, base.rate),
            "x",
            target=">= 0.8",
            note=f"pass-through {base.rate:,.0f} pts/s",
        )
        result.data[mode] = {"scorer": run, "passthrough": base}
    return result
