"""The gateway's Falcon app: `create_app` wires what it is given, `get_app` reads the environment.

gunicorn runs ``gateway.app:get_app()`` in each worker after the fork (the
gunicorn config never preloads the app), so every worker makes its own Kafka
clients and threads; none is shared across a fork.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Callable
from importlib import metadata, resources
from typing import Any, Protocol

import falcon

from bus.clients import driver_for
from bus.reply import ReplyClient
from bus.settings import KafkaSettings
from bus.topics import Topics
from core.errors import MessageError
from gateway.catalogue import Catalogue, CatalogueFeed
from gateway.config import GatewayConfig
from gateway.inference import Inference, InferenceBus
from gateway.metrics import Metrics, MetricsMiddleware
from gateway.payloads import GatewayError
from gateway.resources import (
    AsyncResult,
    Infer,
    Live,
    MetricsResource,
    ModelList,
    ModelMetadata,
    OpenAPI,
    Ping,
    Predict,
    Ready,
    ServerMetadata,
    error_body,
)

log = logging.getLogger(__name__)

VERSION_ROUTE = "/v2/models/{name}/versions/{version:int(min=1)}"


def _version() -> str:
    try:
        return metadata.version("streamscore")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def openapi_document() -> bytes:
    """The OpenAPI description shipped in the package."""
    return resources.files("gateway").joinpath("openapi.json").read_bytes()


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def create_app(
    bus: InferenceBus,
    catalogue: Catalogue,
    *,
    config: GatewayConfig | None = None,
    clock_ms: Callable[[], int] = _wall_ms,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    metrics: Metrics | None = None,
) -> falcon.App[falcon.Request, falcon.Response]:
    """The gateway app over a bus client, a model catalogue and a wall clock (ms)."""
    config = config or GatewayConfig()
    metrics = metrics or Metrics(bus.stats)
    inference = Inference(
        bus,
        catalogue,
        timeout_s=config.timeout_s,
        async_ttl_ms=config.async_ttl_ms,
        clock_ms=clock_ms,
        new_id=new_id,
    )
    app = falcon.App(middleware=[MetricsMiddleware(metrics)])
    # ASCII JSON: any string a client sent (a lone surrogate escape too) can be echoed.
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(
        dumps=functools.partial(json.dumps, ensure_ascii=True)
    )
    app.set_error_serializer(_serialize_error)
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(GatewayError, _gateway_error)
    app.add_error_handler(MessageError, _message_error)

    app.add_route("/ping", Ping())
    app.add_route("/v2", ServerMetadata(_version()))
    app.add_route("/v2/health/live", Live())
    app.add_route("/v2/health/ready", Ready(inference))
    app.add_route("/v2/models", ModelList(catalogue))
    model = ModelMetadata(catalogue)
    app.add_route("/v2/models/{name}", model)
    app.add_route(VERSION_ROUTE, model)
    infer = Infer(inference, config.max_body_bytes)
    app.add_route("/v2/models/{name}/infer", infer)
    app.add_route(VERSION_ROUTE + "/infer", infer)
    app.add_route("/v2/requests/{token}", AsyncResult(inference))
    app.add_route("/predict", Predict(inference, config.max_body_bytes))
    app.add_route("/openapi.json", OpenAPI(openapi_document()))
    app.add_route("/metrics", MetricsResource(metrics))
    return app


def _serialize_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(error_body(req, resp, exc))


def _gateway_error(
    req: falcon.Request, resp: falcon.Response, exc: GatewayError, params: dict[str, Any]
) -> None:
    resp.status = exc.status
    if exc.retry_after_s is not None:
        resp.set_header("Retry-After", str(exc.retry_after_s))
    resp.media = {"error": exc.message}


def _message_error(
    req: falcon.Request, resp: falcon.Response, exc: MessageError, params: dict[str, Any]
) -> None:
    """A request the message contract refuses (e.g. a value out of range): the client's 400."""
    resp.status = falcon.HTTP_400
    resp.media = {"error": str(exc)}


def _unexpected(
    req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]
) -> None:
    """A bug, not the client's mistake: log it whole, answer a JSON 500."""
    log.exception("unexpected error on %s %s", req.method, req.path)
    resp.status = falcon.HTTP_500
    resp.media = {"error": "internal error (logged on the gateway); please report it"}


class _Closeable(Protocol):
    def close(self) -> None: ...


_running: list[_Closeable] = []


def get_app() -> falcon.App[falcon.Request, falcon.Response]:
    """The app over Kafka, configured from the environment (run in each gunicorn worker)."""
    config = GatewayConfig.from_env()
    settings = KafkaSettings.from_env()
    topics = Topics.from_env()
    driver = driver_for(settings)
    bus = ReplyClient(
        driver,
        topics.requests,
        topics.replies,
        group_id=config.reply_group_for(topics.replies),
        max_pending=config.max_pending,
    )
    catalogue = Catalogue()
    _running.append(CatalogueFeed(driver, topics, catalogue).start())
    _running.append(bus.start())
    log.info(
        "gateway worker answering over %r -> %r (group %r)",
        topics.requests,
        topics.replies,
        bus.group_id,
    )
    return create_app(bus, catalogue, config=config)


def shutdown() -> None:
    """Close what `get_app` started in this process (gunicorn's ``worker_exit``)."""
    while _running:
        _running.pop().close()
