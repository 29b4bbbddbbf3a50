"""``python -m bench [NAME ...]``: run the benchmarks, print their table, write it as JSON.

With no name every benchmark runs, in the order below, in one process run;
``python -m bench scorer`` runs one (and what it needs: the pre-filled topics,
the pass-through and the peer it is compared with). Figures go to ``bench/results/<stamp>.json``
and a markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import (
    bus_limit,
    gateway_load,
    gateway_starts,
    hotswap,
    latency,
    learning,
    scoring,
    training,
)
from bench.config import BenchConfig
from bench.context import BenchContext, load_average, wait_for_quiet
from bench.report import BenchResult, Row, render_table, targets_summary, write_results
from core.logs import configure_logging

log = logging.getLogger("bench")

Bench = Callable[[BenchContext, BenchConfig], BenchResult]
Json = dict[str, Any]

#: name -> (title, function), in the order they run
BENCHES: dict[str, tuple[str, Bench]] = {
    "bus": ("1. bus limit", bus_limit.run),
    "passthrough": ("2. pass-through", scoring.run_passthrough),
    "peer": ("3. peer: Quix Streams", scoring.run_peer),
    "scorer": ("4. scorer", scoring.run_scorer),
    "latency": ("5. end-to-end latency", latency.run),
    "trainer": ("6. trainer", training.run),
    "gateway": ("7. gateway", gateway_load.run),
    "gateway-starts": (gateway_starts.TITLE, gateway_starts.run),
    "hotswap": ("8. hot swap", hotswap.run),
    "learning": ("9. learning", learning.run),
}
RESULTS = Path(__file__).resolve().parent / "results"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    packages = ("kafka-python", "crc32c", "confluent-kafka", "quixstreams", "msgspec", "numpy")
    for package in (*packages, "falcon", "gunicorn"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    try:
        out["librdkafka"] = str(importlib.import_module("confluent_kafka").libversion()[0])
    except ImportError:
        out["librdkafka"] = "not installed"
    return out


def run_one(ctx: BenchContext, config: BenchConfig, name: str) -> BenchResult:
    """Run one benchmark; a failure becomes an error in its result, not a crash of the run."""
    title, bench = BENCHES[name]
    load = load_average()
    began = time.monotonic()
    print(f"\n== {title} (load {load})", flush=True)
    try:
        result = bench(ctx, config)
    except Exception as exc:  # the other benchmarks still run; the error is in the table
        log.exception("%s failed", title)
        result = BenchResult(title, error=f"{type(exc).__name__}: {exc}")
        result.add("-", "FAILED", None, note=result.error or "")
    finally:
        ctx.stop_services()
    result.seconds = time.monotonic() - began
    result.load = load
    print(render_table(result.rows), flush=True)
    print(f"({result.seconds:.0f} s)", flush=True)
    return result


def _parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"any of {', '.join(BENCHES)} (default: all)"
    )
    parser.add_argument("--points", type=int, help="size of the pre-filled points topic")
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=0.0,
        help="first wait (up to 5 min) for the 1-minute load to fall to this (0: do not wait)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    return parser


def _run_all(config: BenchConfig, names: list[str]) -> tuple[list[BenchResult], str]:
    """Run the named benchmarks in one context; their results and the load before."""
    ctx = BenchContext(dict(os.environ))
    load_before = load_average()
    results: list[BenchResult] = []
    try:
        print(ctx.open(), f"| {os.cpu_count()} CPUs | load {load_before}", flush=True)
        for name in names:
            results.append(run_one(ctx, config, name))
    finally:
        ctx.close()
    return results, load_before


def _document(run: dict[str, Any], config: BenchConfig, results: list[BenchResult]) -> Json:
    """The JSON document of a run: ``run`` (command, times, loads, table) and the figures."""
    return {
        **{key: run[key] for key in ("command", "started_at", "seconds")},
        "cpus": os.cpu_count(),
        **{key: run[key] for key in ("load_before", "load_after")},
        "versions": _versions(),
        "config": config,
        "targets": run["targets"],
        "benchmarks": [
            {
                "name": r.name,
                "seconds": r.seconds,
                "load": r.load,
                "error": r.error,
                "rows": [{**row.__dict__, "met": row.met} for row in r.rows],
                "data": r.data,
            }
            for r in results
        ],
        "table": run["table"],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the named benchmarks (all by default); exit 1 if any failed."""
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    configure_logging("bench", os.environ.get("STREAMSCORE_LOG_LEVEL", "WARNING"))
    config = BenchConfig.from_env()
    if args.points:
        config = replace(config, points=args.points)
    if args.quiet_load:
        print(f"waiting for the 1-minute load to fall to {args.quiet_load} ...", flush=True)
        wait_for_quiet(args.quiet_load, 300)
    started = datetime.now(UTC)
    command = " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])])
    began = time.monotonic()
    results, load_before = _run_all(config, args.names or list(BENCHES))
    elapsed = time.monotonic() - began
    rows: list[Row] = [row for result in results for row in result.rows]
    met, missed = targets_summary(rows)
    table, load_after = render_table(rows), load_average()
    run = {
        "command": command,
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": elapsed,
        "load_before": load_before,
        "load_after": load_after,
        "targets": {"met": met, "missed": missed},
        "table": table,
    }
    path = write_results(
        args.out, started.strftime("%Y%m%dT%H%M%SZ"), _document(run, config, results)
    )
    print(f"\n## streamscore benchmarks, {started:%Y-%m-%d %H:%M} UTC")
    print(f"`{command}`: {elapsed / 60:.1f} min, {os.cpu_count()} CPUs, ", end="")
    print(f"load {load_before} before, {load_after} after; targets met {met}, missed {missed}\n")
    print(table)
    print(f"\nfigures: {path}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
