"""The benchmarks' arithmetic and output: summaries, targets, the table, the JSON file.

Everything here is pure (no Kafka, no clock of its own) so it is unit-tested
(``tests/unit/test_bench.py``); percentiles and rates come from
``core.stats``, shared with the demo.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.stats import percentile, rate

#: How a figure is compared with its target: ``>=`` (at least) or ``<=`` (at most).
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
}


@dataclass(frozen=True)
class Latency:
    """p50 / p99 / max of a set of latencies (ms), and how many there were."""

    count: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> Latency:
        """The summary of ``values_ms`` (nan everywhere when empty)."""
        if not values_ms:
            return cls(0, math.nan, math.nan, math.nan)
        return cls(
            len(values_ms), percentile(values_ms, 50), percentile(values_ms, 99), max(values_ms)
        )

    def describe(self) -> str:
        """``p50 3.1 / p99 12.0 / max 40.2 ms``."""
        return f"p50 {fmt(self.p50)} / p99 {fmt(self.p99)} / max {fmt(self.max)} ms"


def span_rate(count: int, first_ms: float, last_ms: float) -> float:
    """Events per second for ``count`` events seen between two timestamps (ms).

    The first timestamp is when the first of them was written, the last when the
    last was: ``count`` events over ``last - first`` milliseconds.
    """
    return rate(count, (last_ms - first_ms) / 1000)


def window_counts(timestamps_ms: Iterable[float], window_ms: float) -> list[int]:
    """How many timestamps fall in each window of ``window_ms``, from the first one on.

    Windows with nothing in them count 0, so a stall shows up as a hole.
    """
    if window_ms <= 0:
        raise ValueError(f"window_ms must be positive, got {window_ms}")
    ordered = sorted(timestamps_ms)
    if not ordered:
        return []
    start = ordered[0]
    counts = [0] * (int((ordered[-1] - start) // window_ms) + 1)
    for ts in ordered:
        counts[int((ts - start) // window_ms)] += 1
    return counts


def steady_rate(timestamps_ms: Iterable[float], window_ms: float = 1000.0) -> float:
    """The median per-second rate over the full windows (the last, partial one left out).

    What an offered load really was: it ignores a slow start and the tail.
    """
    counts = window_counts(timestamps_ms, window_ms)
    full = counts[:-1] if len(counts) > 1 else counts
    if not full:
        return math.nan
    return percentile([rate(c, window_ms / 1000) for c in full], 50)


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; nan when the denominator is 0 or nan."""
    if not denominator or math.isnan(denominator):
        return math.nan
    return numerator / denominator


def fmt(value: float | None, digits: int = 3) -> str:
    """A figure for the table: ``-`` for none or nan, thousands grouped, ``digits`` significant."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    decimals = max(digits - 1 - math.floor(math.log10(abs(value))), 0)
    return f"{value:,.{decimals}f}"


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, its unit, and its target if it has one."""

    bench: str
    case: str
    metric: str
    value: float | None
    unit: str = ""
    target: str = ""  # e.g. ">= 50000": a comparison and a threshold
    note: str = ""

    @property
    def met(self) -> bool | None:
        """True or False against the target; None without a target or a value."""
        if not self.target or self.value is None or math.isnan(self.value):
            return None
        op, threshold = parse_target(self.target)
        return COMPARISONS[op](self.value, threshold)

    def cells(self) -> list[str]:
        """The row's cells as the table shows them."""
        verdict = {True: "met", False: "MISSED", None: ""}[self.met]
        target = f"{self.target} {self.unit}".strip() if self.target else ""
        return [
            self.bench,
            self.case,
            self.metric,
            f"{fmt(self.value)} {self.unit}".strip() if self.value is not None else "-",
            f"{target} {verdict}".strip(),
            self.note,
        ]


def parse_target(target: str) -> tuple[str, float]:
    """``">= 50000"`` -> (">=", 50000.0); ValueError for anything else."""
    op, _, threshold = target.strip().partition(" ")
    if op not in COMPARISONS or not threshold.strip():
        raise ValueError(f"a target is '>= N' or '<= N', got {target!r}")
    return op, float(threshold.replace(",", "").replace("_", ""))


HEADER = ["benchmark", "case", "metric", "value", "target", "note"]


def render_table(rows: Sequence[Row]) -> str:
    """The rows as a markdown table (pipes in cells are escaped)."""
    lines = [_line(HEADER), _line(["---"] * len(HEADER))]
    lines += [_line(row.cells()) for row in rows]
    return "\n".join(lines)


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


@dataclass
class BenchResult:
    """What one benchmark found: its table rows and its raw figures (for the JSON)."""

    name: str
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    load: str = ""  # the 1/5/15-minute load averages when it started
    error: str | None = None

    def add(
        self,
        case: str,
        metric: str,
        value: float | None,
        unit: str = "",
        *,
        target: str = "",
        note: str = "",
    ) -> Row:
        """Append a row to this benchmark's table; return it."""
        row = Row(self.name, case, metric, value, unit, target, note)
        self.rows.append(row)
        return row


def targets_summary(rows: Iterable[Row]) -> tuple[int, int]:
    """(met, missed) over the rows that have a target."""
    verdicts = [row.met for row in rows if row.met is not None]
    return sum(verdicts), len(verdicts) - sum(verdicts)


def to_json(obj: Any) -> Any:
    """``obj`` with dataclasses as dicts and nan/inf as None (strict JSON)."""
    if hasattr(obj, "__dataclass_fields__"):
        return to_json(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_results(directory: Path, stamp: str, document: Mapping[str, Any]) -> Path:
    """Write ``document`` to ``<directory>/<stamp>.json``; return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}.json"
    path.write_text(json.dumps(to_json(document), indent=2, allow_nan=False) + "\n")
    return path
