"""Server-side SVG charts of rolling scores: one line per model version, marks for changes.

`score_chart` draws one metric (``r2``, ``rmse`` or ``mae``) of the scores view
over time: each model version is a polyline (``data-model``/``data-version``),
the first score of each version after the first is marked by a dashed vertical
line labelled ``vN`` where there is room (class ``version-mark``), and each detected drift by
a red triangle on the time axis (class ``drift-mark``). No script, no external
resource: the SVG works offline and inline in the page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

METRICS = ("r2", "rmse", "mae")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 150, 20, 28
#: Fewest pixels between two version labels of one model (closer changes are lines only).
LABEL_GAP = 30.0


def _values(series: Sequence[Mapping[str, Any]], metric: str) -> list[tuple[int, float]]:
    out = []
    for s in series:
        for p in s["points"]:
            v = p.get(metric)
            if isinstance(v, int | float) and math.isfinite(v):
                out.append((int(p["ts"]), float(v)))
    return out


def _bounds(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high - low < 1e-12:
        pad = abs(high) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return low - pad, high + pad


def _clock(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, UTC).strftime("%H:%M:%S")


@dataclass(frozen=True)
class _Frame:
    """The plot area: time and value ranges, and where they land in pixels."""

    t0: int
    t1: int
    v0: float
    v1: float

    def x(self, ts: int) -> float:
        return LEFT + (ts - self.t0) / (self.t1 - self.t0) * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        return TOP + (self.v1 - value) / (self.v1 - self.v0) * (HEIGHT - TOP - BOTTOM)


def score_chart(view: Mapping[str, Any], metric: str) -> str:
    """An SVG document of ``metric`` over time for every version in the scores view."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")
    series: Sequence[Mapping[str, Any]] = view.get("series", [])
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-metric="{metric}" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'font-family="sans-serif" font-size="11">'
        f'<text x="{LEFT}" y="13" font-weight="bold">rolling {metric.upper()} (UTC)</text>'
    )
    points = _values(series, metric)
    if not points:
        empty = (
            f'<text x="{WIDTH // 2}" y="{HEIGHT // 2}" text-anchor="middle">no scores yet</text>'
        )
        return head + empty + "</svg>"
    t0 = min(t for t, _ in points)
    frame = _Frame(t0, max(*(t for t, _ in points), t0 + 1000), *_bounds([v for _, v in points]))
    parts = [head, _axes(frame)]
    colors = _colors(series)
    rows = {name: i for i, name in enumerate(sorted(colors))}
    labelled_at = dict.fromkeys(colors, -LABEL_GAP)
    ordered = sorted(series, key=lambda s: s["points"][0]["ts"] if s["points"] else 0)
    for s in ordered:
        name = str(s["model"])
        parts += _series(frame, s, metric, colors[name], row=rows[name], labelled_at=labelled_at)
    parts += _legend(series, colors)
    for d in view.get("drifts", []):
        if frame.t0 <= int(d["ts"]) <= frame.t1:
            parts.append(_drift(frame, d))
    parts.append("</svg>")
    return "".join(parts)


def _series(
    frame: _Frame,
    s: Mapping[str, Any],
    metric: str,
    color: str,
    *,
    row: int,
    labelled_at: dict[str, float],
) -> list[str]:
    """One version's line and its change mark (labelled ``vN`` where there is room)."""
    coords = [
        (frame.x(int(p["ts"])), frame.y(float(p[metric])))
        for p in s["points"]
        if isinstance(p.get(metric), int | float) and math.isfinite(p[metric])
    ]
    if not coords:
        return []
    label = escape(f"{s['model']} v{s['version']}")
    attrs = f'data-model={quoteattr(str(s["model"]))} data-version="{int(s["version"])}"'
    path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
    parts = [
        f'<polyline class="series" {attrs} fill="none" stroke="{color}" '
        f'stroke-width="1.6" points="{path}"><title>{label}</title></polyline>'
    ]
    if len(coords) == 1:
        parts.append(
            f'<circle cx="{coords[0][0]:.1f}" cy="{coords[0][1]:.1f}" r="2.5" fill="{color}"/>'
        )
    first_x = coords[0][0]
    if first_x > LEFT + 0.5:
        model = str(s["model"])
        text = ""
        if first_x - labelled_at[model] >= LABEL_GAP:
            labelled_at[model] = first_x
            text = (
                f'<text x="{first_x + 2:.1f}" y="{TOP + 10 + 12 * row}" fill="{color}">'
                f"v{int(s['version'])}</text>"
            )
        parts.append(
            f'<g class="version-mark" {attrs}><line x1="{first_x:.1f}" x2="{first_x:.1f}" '
            f'y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="{color}" stroke-dasharray="3,3"/>'
            f"<title>{label}</title>{text}</g>"
        )
    return parts


def _legend(series: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> list[str]:
    """One entry per model: its colour and the versions drawn."""
    parts = [
        f'<g class="legend"><polygon points="{WIDTH - RIGHT + 10},{HEIGHT - BOTTOM} '
        f'{WIDTH - RIGHT + 15},{HEIGHT - BOTTOM - 9} {WIDTH - RIGHT + 20},{HEIGHT - BOTTOM}" '
        f'fill="#d62728"/><text x="{WIDTH - RIGHT + 24}" y="{HEIGHT - BOTTOM}">drift</text></g>'
    ]
    for i, name in enumerate(sorted(colors)):
        versions = sorted(int(s["version"]) for s in series if str(s["model"]) == name)
        shown = f"v{versions[0]}" if len(versions) == 1 else f"v{versions[0]}-v{versions[-1]}"
        y = TOP + 4 + 14 * i
        parts.append(
            f'<g class="legend" data-model={quoteattr(name)}><rect x="{WIDTH - RIGHT + 10}" '
            f'y="{y - 8}" width="10" height="3" fill="{colors[name]}"/>'
            f'<text x="{WIDTH - RIGHT + 24}" y="{y - 4}">{escape(name)} {shown}</text></g>'
        )
    return parts


def _drift(frame: _Frame, d: Mapping[str, Any]) -> str:
    """A red triangle on the time axis where a drift was detected."""
    dx, base = frame.x(int(d["ts"])), HEIGHT - BOTTOM
    return (
        f'<g class="drift-mark" data-model={quoteattr(str(d["model"]))} '
        f'data-ts="{int(d["ts"])}"><polygon points="{dx:.1f},{base - 9} {dx - 5:.1f},{base} '
        f'{dx + 5:.1f},{base}" fill="#d62728"/><title>drift #{int(d["count"])} on '
        f"{escape(str(d['model']))} at {_clock(int(d['ts']))}</title></g>"
    )


def _colors(series: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    names = sorted({str(s["model"]) for s in series})
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _axes(frame: _Frame) -> str:
    plot_bottom = HEIGHT - BOTTOM
    out = [
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" '
        f'height="{plot_bottom - TOP}" fill="none" stroke="#999"/>'
    ]
    for i in range(5):
        value = frame.v0 + (frame.v1 - frame.v0) * i / 4
        out.append(
            f'<text x="{LEFT - 4}" y="{frame.y(value) + 4:.1f}" text-anchor="end">'
            f"{value:.3g}</text>"
        )
    for i in range(4):
        ts = frame.t0 + (frame.t1 - frame.t0) * i // 3
        out.append(
            f'<text x="{frame.x(ts):.1f}" y="{plot_bottom + 14}" text-anchor="middle">'
            f"{_clock(ts)}</text>"
        )
    return "".join(out)
