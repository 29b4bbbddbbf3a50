"""The gateway's Falcon app: `create_app` wires what it is given, `get_app` reads the environment.

gunicorn runs ``gateway.app:get_app()`` in each worker after the fork (the
gunicorn config never preloads the app), so every worker makes its own Kafka
clients and threads; none is shared across a fork.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from importlib import metadata, resources
from typing import Any, Protocol

import falcon

from bus.clients import driver_for
from bus.reply import ReplyClient
from bus.settings import KafkaSettings
from bus.signing import model_key_from_env
from bus.topics import Topics
from core.errors import MessageError
from gateway.catalogue import Catalogue, CatalogueFeed
from gateway.config import WORKER_SLOT_VARIABLE, GatewayConfig
from gateway.docs import Docs, swagger_ui_dir
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
    ModelReady,
    OpenAPI,
    Ping,
    Predict,
    Ready,
    RequestIds,
    ScoreBatch,
    ServerMetadata,
    error_body,
)

log = logging.getLogger(__name__)

VERSION_ROUTE = "/v2/models/{name}/versions/{version:int(min=1)}"

#: How long a worker waits, before it takes requests, for its reply partition to be read.
READY_WAIT_S = 30.0


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
    middleware: list[Any] = [RequestIds(new_id), MetricsMiddleware(metrics)]
    app = falcon.App(middleware=middleware)
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
    model_ready = ModelReady(inference)
    app.add_route("/v2/models/{name}/ready", model_ready)
    app.add_route(VERSION_ROUTE + "/ready", model_ready)
    infer = Infer(inference, config.max_body_bytes)
    app.add_route("/v2/models/{name}/infer", infer)
    app.add_route(VERSION_ROUTE + "/infer", infer)
    score = ScoreBatch(inference, config.max_body_bytes)
    app.add_route("/v2/models/{name}/score", score)
    app.add_route(VERSION_ROUTE + "/score", score)
    app.add_route("/v2/requests/{token}", AsyncResult(inference))
    app.add_route("/predict", Predict(inference, config.max_body_bytes))
    app.add_route("/openapi.json", OpenAPI(openapi_document()))
    docs = Docs(swagger_ui_dir())
    app.add_route("/docs", docs)
    app.add_route("/docs/{asset}", docs, suffix="asset")
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
    slot = os.environ.get(WORKER_SLOT_VARIABLE)  # set by gunicorn_conf in each worker
    bus = ReplyClient(
        driver,
        topics.requests,
        topics.replies,
        max_pending=config.max_pending,
        slot=None if slot is None else int(slot),
    )
    catalogue = Catalogue(history=config.model_history, key=model_key_from_env())
    _running.append(CatalogueFeed(driver, topics, catalogue).start())
    _running.append(bus.start())
    # gunicorn takes requests in this worker only once the app is made: it waits until
    # its reply partition is read and its catalogue loaded, so that it never takes a
    # request it cannot answer.
    deadline = time.monotonic() + READY_WAIT_S
    replies = bus.wait_ready(READY_WAIT_S)
    models = catalogue.wait_loaded(max(0.0, deadline - time.monotonic()))
    if replies and models:
        log.info(
            "gateway worker answering over %r -> %r%s, %d models",
            topics.requests,
            topics.replies,
            bus.owned_partitions(),
            len(catalogue.latest()),
        )
    else:
        log.warning(
            "gateway worker: %s after %.0f s (Kafka unreachable?); it answers 503 until then",
            " and ".join(
                what
                for what, done in (
                    (f"{topics.replies!r} not read", replies),
                    (f"{topics.models!r} not loaded", models),
                )
                if not done
            ),
            READY_WAIT_S,
        )
    return create_app(bus, catalogue, config=config)


def shutdown() -> None:
    """Close what `get_app` started in this process (gunicorn's ``worker_exit``)."""
    while _running:
        _running.pop().close()
