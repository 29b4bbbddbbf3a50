"""Server-side SVG charts of rolling scores: one line per model version, marks for changes.

`score_chart` draws one metric (``r2``, ``rmse`` or ``mae``) of the scores view
over time: each model version is a polyline (``data-model``/``data-version``),
the first score of each version after the first is marked by a dashed vertical
line labelled ``name vN`` (class ``version-mark``), and each detected drift by
a red triangle on the time axis (class ``drift-mark``). No script, no external
resource: the SVG works offline and inline in the page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

METRICS = ("r2", "rmse", "mae")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 150, 20, 28


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


def score_chart(view: Mapping[str, Any], metric: str) -> str:
    """An SVG document of ``metric`` over time for every version in the scores view."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")
    series: Sequence[Mapping[str, Any]] = view.get("series", [])
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-metric="{metric}" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'font-family="sans-serif" font-size="11">'
    )
    title = f'<text x="{LEFT}" y="13" font-weight="bold">rolling {metric.upper()}</text>'
    points = _values(series, metric)
    if not points:
        empty = (
            f'<text x="{WIDTH // 2}" y="{HEIGHT // 2}" text-anchor="middle">no scores yet</text>'
        )
        return head + title + empty + "</svg>"
    t0 = min(t for t, _ in points)
    t1 = max(*(t for t, _ in points), t0 + 1000)
    drifts = [d for d in view.get("drifts", []) if t0 <= int(d["ts"]) <= t1]
    v0, v1 = _bounds([v for _, v in points])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(ts: int) -> float:
        return LEFT + (ts - t0) / (t1 - t0) * plot_w

    def y(value: float) -> float:
        return TOP + (v1 - value) / (v1 - v0) * plot_h

    parts = [head, title, _axes(t0, t1, v0, v1, x=x, y=y)]
    colors = _colors(series)
    legend_y = TOP + 4
    for s in sorted(series, key=lambda s: s["points"][0]["ts"] if s["points"] else 0):
        coords = [
            (x(int(p["ts"])), y(float(p[metric])))
            for p in s["points"]
            if isinstance(p.get(metric), int | float) and math.isfinite(p[metric])
        ]
        if not coords:
            continue
        color = colors[s["model"]]
        label = f"{s['model']} v{s['version']}"
        attrs = f'data-model={quoteattr(str(s["model"]))} data-version="{int(s["version"])}"'
        path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
        parts.append(
            f'<polyline class="series" {attrs} fill="none" stroke="{color}" '
            f'stroke-width="1.6" points="{path}"><title>{escape(label)}</title></polyline>'
        )
        if len(coords) == 1:
            cx, cy = coords[0]
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.5" fill="{color}"/>')
        first_x = coords[0][0]
        if first_x > LEFT + 0.5:
            parts.append(
                f'<g class="version-mark" {attrs}><line x1="{first_x:.1f}" x2="{first_x:.1f}" '
                f'y1="{TOP}" y2="{TOP + plot_h}" stroke="{color}" stroke-dasharray="3,3"/>'
                f'<text x="{first_x + 2:.1f}" y="{TOP + 10}" fill="{color}">'
                f"{escape(label)}</text></g>"
            )
        if legend_y < HEIGHT - BOTTOM:
            parts.append(
                f'<g class="legend" {attrs}><rect x="{WIDTH - RIGHT + 10}" y="{legend_y - 8}" '
                f'width="10" height="3" fill="{color}"/><text x="{WIDTH - RIGHT + 24}" '
                f'y="{legend_y - 4}">{escape(label)}</text></g>'
            )
            legend_y += 14
    for d in drifts:
        dx = x(int(d["ts"]))
        base = TOP + plot_h
        parts.append(
            f'<g class="drift-mark" data-model={quoteattr(str(d["model"]))} '
            f'data-ts="{int(d["ts"])}"><polygon points="{dx:.1f},{base - 9} {dx - 5:.1f},{base} '
            f'{dx + 5:.1f},{base}" fill="#d62728"/><title>drift #{int(d["count"])} on '
            f"{escape(str(d['model']))} at {_clock(int(d['ts']))}</title></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _colors(series: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    names = sorted({str(s["model"]) for s in series})
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _axes(t0: int, t1: int, v0: float, v1: float, *, x: Any, y: Any) -> str:
    plot_bottom = HEIGHT - BOTTOM
    out = [
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" '
        f'height="{plot_bottom - TOP}" fill="none" stroke="#999"/>'
    ]
    for i in range(5):
        value = v0 + (v1 - v0) * i / 4
        out.append(
            f'<text x="{LEFT - 4}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.3g}</text>'
        )
    for i in range(4):
        ts = t0 + (t1 - t0) * i // 3
        out.append(
            f'<text x="{x(ts):.1f}" y="{plot_bottom + 14}" text-anchor="middle">{_clock(ts)}</text>'
        )
    return "".join(out)
