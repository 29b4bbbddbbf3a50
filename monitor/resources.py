"""The monitor's HTTP resources: each asks the view source for a snapshot and renders one view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import falcon

from monitor.state import Snapshot
from monitor.svg import METRICS, score_chart
from monitor.views import scores_view


class ViewSource(Protocol):
    """Anything that gives a `Snapshot` of the dashboard (the `Dashboard` itself)."""

    def snapshot(self) -> Snapshot:
        """Everything known now."""
        ...


class Page:
    """``GET /``: the dashboard page."""

    def __init__(self, html: str) -> None:
        self._html = html

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = self._html


class View:
    """``GET /api/<name>``: one view of the dashboard as JSON."""

    def __init__(self, source: ViewSource, view: Callable[[Snapshot], dict[str, Any]]) -> None:
        self._source = source
        self._view = view

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._view(self._source.snapshot())
        resp.cache_control = ["no-store"]


class Chart:
    """``GET /chart/{metric}.svg``: rolling ``r2``, ``rmse`` or ``mae`` over time, as SVG."""

    def __init__(self, source: ViewSource) -> None:
        self._source = source

    def on_get(self, req: falcon.Request, resp: falcon.Response, metric: str) -> None:
        if metric not in METRICS:
            raise falcon.HTTPNotFound(
                description=f"no chart {metric!r}: ask for one of {', '.join(METRICS)}"
            )
        resp.content_type = "image/svg+xml"
        resp.text = score_chart(scores_view(self._source.snapshot()), metric)
        resp.cache_control = ["no-store"]


class Ping:
    """``GET /ping``: the monitor answers."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"ping": "pong"}
