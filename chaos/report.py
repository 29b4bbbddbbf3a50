"""The chaos suite's table: one row per scenario and client, printed and kept in docs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chaos.counts import RunResult, worst

COLUMNS = (
    "scenario",
    "client",
    "runs",
    "points",
    "lost",
    "duplicated",
    "dead letters",
    "time to recover",
    "services exited",
    "result",
)
NUMERIC = {"runs", "points", "lost", "duplicated", "dead letters", "time to recover"}


@dataclass(frozen=True)
class Row:
    """The runs of one scenario with one client, summed up."""

    scenario: str
    client: str
    runs: int
    points: int
    lost: int
    duplicated: int
    deadletters: int
    recover: str
    exited: str
    passed: bool

    def cells(self) -> list[str]:
        """The row's cells, in the order of `COLUMNS`."""
        return [
            self.scenario,
            self.client,
            str(self.runs),
            f"{self.points:,}",
            f"{self.lost:,}",
            f"{self.duplicated:,}",
            f"{self.deadletters:,}",
            self.recover,
            self.exited,
            "PASS" if self.passed else "FAIL",
        ]


def format_recovery(values: Sequence[float | None]) -> str:
    """``4.2 s``, ``9.8 s (worst of 5)``, ``never`` (a fault not recovered from), or ``-``."""
    if not values:
        return "-"
    slowest = worst(values)
    if slowest is None:
        return "never"
    text = f"{slowest:.1f} s"
    return f"{text} (worst of {len(values)})" if len(values) > 1 else text


def summarise(results: Iterable[RunResult]) -> list[Row]:
    """One row per (scenario, client), in the order the runs came."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for result in results:
        groups.setdefault((result.scenario, result.client), []).append(result)
    rows = []
    for (scenario, client), runs in groups.items():
        exited = sorted({name for run in runs for name in run.exited})
        rows.append(
            Row(
                scenario=scenario,
                client=client,
                runs=len(runs),
                points=sum(run.points for run in runs),
                lost=sum(run.lost for run in runs),
                duplicated=sum(run.duplicated for run in runs),
                deadletters=sum(run.deadletters for run in runs),
                recover=format_recovery([r for run in runs for r in run.recoveries]),
                exited=", ".join(exited) if exited else "none",
                passed=all(run.passed for run in runs),
            )
        )
    return rows


def render_table(rows: Sequence[Row]) -> str:
    """A markdown table (numbers right-aligned)."""
    header = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "|".join("---:" if c in NUMERIC else "---" for c in COLUMNS) + "|"
    body = [
        "| " + " | ".join(cell.replace("|", "/") for cell in row.cells()) + " |" for row in rows
    ]
    return "\n".join([header, rule, *body])


def render_failures(results: Iterable[RunResult]) -> str:
    """Why each failed run failed, and the notes of every run, as a markdown list."""
    lines = []
    counted: dict[tuple[str, str], int] = {}
    for result in results:
        key = (result.scenario, result.client)
        index = counted[key] = counted.get(key, 0) + 1
        if result.passed and not result.notes:
            continue
        verdict = "PASS" if result.passed else "FAIL"
        lines.append(f"- **{result.scenario}** ({result.client}, run {index}): {verdict}")
        lines += [f"  - {reason}" for reason in result.failures]
        lines += [f"  - note: {note}" for note in result.notes]
    return "\n".join(lines)


def section(
    client: str, *, command: str, when: str, load: str, rows: Sequence[Row], details: str
) -> str:
    """The results section of one client in docs/reliability.md."""
    parts = [
        f"### {client}",
        "",
        f"`{command}`, {when}; {load}.",
        "",
        render_table(rows),
    ]
    if details:
        parts += ["", "What failed, and notes:", "", details]
    return "\n".join(parts)


def _markers(client: str) -> tuple[str, str]:
    return f"<!-- chaos results: {client} -->", f"<!-- end of chaos results: {client} -->"


def update_document(text: str, client: str, body: str) -> str:
    """``text`` with the results section of ``client`` replaced by ``body`` (appended if new)."""
    start, end = _markers(client)
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return text.rstrip("\n") + "\n\n" + block + "\n"
