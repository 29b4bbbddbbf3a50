"""``python -m chaos``: inject faults into a live stream and count what was lost.

Runs each scenario (all by default, or those named) against brokers of its own,
prints a line per run and a table at the end, and writes the table to
docs/reliability.md (the section of the client under test). Exit status 1 when a
scenario failed, 2 when the suite could not run, 130 on Ctrl-C; whatever it
started is stopped in every case.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bus.settings import CLIENTS
from chaos.counts import RunResult
from chaos.harness import Load
from chaos.processes import shielded
from chaos.report import (
    Row,
    render_failures,
    render_table,
    section,
    summarise,
    update_document,
)
from chaos.scenarios import SCENARIOS, BrokerPool, Context, run_scenario
from core.errors import StreamscoreError
from core.logs import configure_logging

log = logging.getLogger("chaos")

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
FULL_RUNS = 3


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n"
        + "\n".join(f"  {s.name:<16} {s.summary}" for s in SCENARIOS.values()),
    )
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help="run only these (default: all)"
    )
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        default=os.environ.get("STREAMSCORE_KAFKA_CLIENT", "kafka-python") or "kafka-python",
        help="the Kafka client the services use [STREAMSCORE_KAFKA_CLIENT; default: kafka-python]",
    )
    parser.add_argument("--quick", action="store_true", help="one run of each scenario (CI)")
    parser.add_argument("--runs", type=int, help=f"runs of each scenario (default {FULL_RUNS})")
    parser.add_argument("--rate", type=float, default=Load.rate, help="points per second")
    parser.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        help="write the table to docs/reliability.md (default: when every scenario runs)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the logs and broker data even if all pass"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.rate <= 0:
        parser.error("--rate must be more than 0")
    return args


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def describe_run(result: RunResult, index: int, runs: int) -> str:
    """One line (and the reasons) for a finished run."""
    recover = ", ".join("never" if r is None else f"{r:.1f}" for r in result.recoveries) or "-"
    line = (
        f"{result.scenario} [{result.client}] run {index}/{runs}: "
        f"{'PASS' if result.passed else 'FAIL'} in {result.seconds:.0f} s; "
        f"points {result.points:,}, lost {result.lost:,}, duplicated {result.duplicated:,}, "
        f"dead letters {result.deadletters:,}, recover (s) {recover}"
    )
    return "\n".join([line, *(f"    {reason}" for reason in result.failures)])


def load_text() -> str:
    """The machine's load average and CPUs, for the record."""
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def _print_results(results: list[RunResult], rows: list[Row], elapsed: float) -> str:
    """Print the table, the failures and the totals; return the failures' details."""
    if rows:
        print("\n" + render_table(rows), flush=True)
    details = render_failures(results)
    if details:
        print("\n" + details, flush=True)
    print(f"\n{len(results)} run(s) in {elapsed / 60:.1f} min; {load_text()}", flush=True)
    return details


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios; 0 when all passed, 1 when one failed, 2 when the suite cannot run."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging("chaos", os.environ.get("STREAMSCORE_LOG_LEVEL", "WARNING"))
    signal.signal(signal.SIGTERM, _interrupt)
    runs = args.runs or (1 if args.quick else FULL_RUNS)
    chosen = [s for s in SCENARIOS.values() if not args.scenarios or s.name in args.scenarios]
    load = replace(Load(), rate=args.rate)
    command = "python -m chaos " + shlex.join(argv if argv is not None else sys.argv[1:])
    workdir = Path(tempfile.mkdtemp(prefix="streamscore-chaos-"))
    pool = BrokerPool(workdir)
    ctx = Context(args.client, load, pool, workdir / "runs")
    started = datetime.now(UTC)
    load_before = load_text()
    print(
        f"chaos: {len(chosen)} scenario(s) x {runs} run(s), client {args.client}, "
        f"{load.rate:,.0f} points/s; logs in {workdir}",
        flush=True,
    )
    results: list[RunResult] = []
    interrupted = False
    try:
        pool.get(chosen[0].brokers)  # a broker that cannot start at all is not a scenario's fault
        for scenario in chosen:
            for index in range(1, runs + 1):
                result = run_scenario(ctx, scenario)
                results.append(result)
                print(describe_run(result, index, runs), flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("chaos: interrupted; stopping everything it started", file=sys.stderr)
    except StreamscoreError as exc:
        print(f"chaos: cannot run: {exc}", file=sys.stderr)
        with shielded():
            pool.stop()
        return 2
    finally:
        with shielded():
            pool.stop()
    elapsed = (datetime.now(UTC) - started).total_seconds()
    rows = summarise(results)
    failed = [r for r in results if not r.passed]
    details = _print_results(results, rows, elapsed)
    write = args.write if args.write is not None else not args.scenarios
    if write and results and not interrupted:
        when = f"{started:%Y-%m-%d %H:%M} UTC, {elapsed / 60:.1f} min"
        load_line = f"{load.rate:,.0f} points/s; {load_before} at the start"
        body = section(
            args.client, command=command, when=when, load=load_line, rows=rows, details=details
        )
        text = DOC.read_text() if DOC.exists() else "# Reliability\n"
        DOC.write_text(update_document(text, args.client, body))
        print(f"table written to {DOC.relative_to(ROOT)}", flush=True)
    if failed or interrupted or args.keep_logs:
        print(f"logs kept in {workdir}", flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if interrupted:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
