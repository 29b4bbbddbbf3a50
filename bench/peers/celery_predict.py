"""The task-queue peer of the gateway: Falcon + gunicorn -> Celery on Redis -> a worker predicts.

The design the gateway replaces, doing the same prediction: ``POST /predict`` is
parsed like the gateway does (``gateway.payloads``), sent as a Celery task over
Redis (broker and result backend), and a Celery worker predicts it with the
scorer's own code (``scorer.requests.answer`` over the models of
``BENCH_BASELINE_MODELS``, as `bench.baseline` loads them); the web process waits
for the result. Run the worker with
``celery -A bench.peers.celery_predict worker`` and the web side with
``gunicorn 'bench.peers.celery_predict:get_app()'``; ``BENCH_REDIS_URL`` names
the Redis (default ``redis://127.0.0.1:6379/0``).
"""

from __future__ import annotations

import importlib
import os
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import falcon

from bench.baseline import load_registry
from bus.messages import InferReply, InferRequest
from gateway.payloads import GatewayError, decode_json, parse_predict, predict_response
from scorer.registry import LiveModel, ModelRegistry
from scorer.requests import answer

MAX_BODY_BYTES = 1_000_000
TIMEOUT_S = 5.0
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

# celery is a bench-only dependency (the `bench` extra), imported by name: untyped here.
app: Any = importlib.import_module("celery").Celery(
    "bench-peer", broker=REDIS_URL, backend=REDIS_URL
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=False,
    worker_prefetch_multiplier=16,
    result_expires=300,
    broker_connection_retry_on_startup=True,
)


@cache
def _registry() -> ModelRegistry:
    return load_registry(Path(os.environ["BENCH_BASELINE_MODELS"]))


def _serving() -> LiveModel | None:
    return next(iter(_registry().latest().values()), None)


@app.task(name="bench.predict")  # type: ignore[untyped-decorator]
def predict(request_id: str, rows: list[list[float]], model: str | None) -> dict[str, Any]:
    """Predict ``rows`` in the worker; the reply as JSON (the error with its status)."""
    reply = answer(InferRequest(request_id, rows, model, None), _registry(), _serving)
    return {
        "model": reply.model,
        "version": reply.version,
        "predictions": reply.predictions,
        "error": reply.error,
        "status": reply.status,
    }


class Predict:
    """``POST /predict`` through the task queue."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Send the task, wait for its result."""
        rows = parse_predict(decode_json(req.bounded_stream.read(MAX_BODY_BYTES)))
        request_id = rows.id or uuid.uuid4().hex
        result = predict.delay(request_id, rows.rows, rows.model).get(timeout=TIMEOUT_S)
        if result["error"] is not None:
            raise GatewayError(int(result["status"]), str(result["error"]))
        reply = InferReply(request_id, result["model"], result["version"], result["predictions"])
        resp.media = predict_response(reply, rows, request_id)


def _gateway_error(
    req: falcon.Request, resp: falcon.Response, exc: GatewayError, params: object
) -> None:
    resp.status = exc.status
    resp.media = {"error": exc.message}


def get_app() -> falcon.App[falcon.Request, falcon.Response]:
    """The web side for gunicorn."""
    web = falcon.App()
    web.add_error_handler(GatewayError, _gateway_error)
    web.add_route("/predict", Predict())
    return web
