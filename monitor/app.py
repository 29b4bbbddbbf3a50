"""The monitor's Falcon app: `create_app` wires a view source, `get_app` reads the environment.

gunicorn runs ``monitor.app:get_app()`` in its one worker (the dashboard is
in-memory state: one process holds it, threads answer the requests).
"""

from __future__ import annotations

import logging
from typing import Any

import falcon

from bus.clients import driver_for, make_admin
from bus.settings import KafkaSettings
from bus.topics import Topics
from monitor.config import MonitorConfig
from monitor.feed import Feed
from monitor.page import render_page
from monitor.records import Recorder
from monitor.resources import Chart, Page, Ping, View, ViewSource
from monitor.state import Dashboard
from monitor.views import deadletters_view, groups_view, models_view, requests_view, scores_view

log = logging.getLogger(__name__)

VIEWS = {
    "groups": groups_view,
    "models": models_view,
    "scores": scores_view,
    "deadletters": deadletters_view,
    "requests": requests_view,
}


def create_app(
    view_source: ViewSource, *, config: MonitorConfig | None = None
) -> falcon.App[falcon.Request, falcon.Response]:
    """The dashboard over anything that gives snapshots (a `Dashboard`)."""
    config = config or MonitorConfig()
    app = falcon.App()
    app.add_route("/", Page(render_page(config.refresh_ms)))
    app.add_route("/ping", Ping())
    for name, view in VIEWS.items():
        app.add_route(f"/api/{name}", View(view_source, view))
    app.add_route("/chart/{metric}.svg", Chart(view_source))
    return app


_running: list[Feed] = []


def get_app() -> falcon.App[falcon.Request, falcon.Response]:
    """The dashboard over Kafka, configured from the environment (gunicorn's worker)."""
    config = MonitorConfig.from_env()
    settings = KafkaSettings.from_env()
    topics = Topics.from_env()
    dashboard = Dashboard(history=config.history, deadletters=config.deadletters)

    def admin() -> Any:
        return make_admin(settings)

    feed = Feed(driver_for(settings), topics, Recorder(topics, dashboard), config, admin)
    _running.append(feed.start())
    log.info("monitor on http://%s reading %s", config.bind, settings.bootstrap_servers)
    return create_app(dashboard, config=config)


def shutdown() -> None:
    """Stop what `get_app` started in this process (gunicorn's ``worker_exit``)."""
    while _running:
        _running.pop().close()
