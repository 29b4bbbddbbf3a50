"""The HTTP resources: parse the request, call one injected object, set the response."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import falcon

from bus.messages import Score
from bus.reply import valid_request_id
from gateway.catalogue import Catalogue, ModelEntry, VersionInfo
from gateway.inference import Inference
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.payloads import (
    OUTPUT_NAME,
    GatewayError,
    Json,
    decode_json,
    infer_response,
    parse_infer,
    parse_predict,
    parse_score,
    predict_response,
    too_large,
)

PLATFORM = "streamscore"
REQUEST_ID_HEADER = "X-Request-Id"


class RequestIds:
    """Middleware: every request has an id, the client's ``X-Request-Id`` or a new one.

    It is in ``req.context.request_id`` for the resources (which send it on the bus,
    so the scorer logs it and echoes it on the reply) and in the response's
    ``X-Request-Id``. A client's id that is not printable ASCII of 1-128
    characters is replaced by a new one.
    """

    def __init__(self, new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self._new_id = new_id

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Take the client's id or make one."""
        given = req.get_header(REQUEST_ID_HEADER)
        req.context.request_id = given if valid_request_id(given) else self._new_id()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        """Send the id back."""
        request_id = getattr(req.context, "request_id", None)
        if request_id is not None:
            resp.set_header(REQUEST_ID_HEADER, request_id)


def request_id(req: falcon.Request) -> str | None:
    """The id `RequestIds` gave this request."""
    value = getattr(req.context, "request_id", None)
    return value if isinstance(value, str) else None


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The request's body, at most ``limit`` bytes (413 past it), however it was framed.

    With a Content-Length the declared size is checked first and exactly that much is
    read; a chunked body (no Content-Length: the server hands it over de-chunked) is
    read until its end, ``limit + 1`` bytes at most. Any other body is empty.
    """
    length = req.content_length
    if length is not None:
        if length > limit:
            raise too_large(limit)
        return _read(req.bounded_stream, length)
    if "chunked" not in (req.get_header("Transfer-Encoding") or "").lower():
        return b""
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        part = _read(req.stream, limit + 1 - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > limit:
        raise too_large(limit)
    return b"".join(parts)


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def _read(stream: _Readable, size: int) -> bytes:
    try:
        return stream.read(size)
    except Exception as exc:  # the server's own error: a malformed chunk, a body cut short
        raise GatewayError(
            400, f"the body could not be read ({type(exc).__name__}: {exc}): send it whole"
        ) from exc


def read_json(req: falcon.Request, limit: int) -> Json:
    """The request's body as a JSON object; 413 past ``limit`` bytes, 400 if it is not one."""
    return decode_json(read_body(req, limit))


def prefers_async(req: falcon.Request) -> bool:
    """True when the ``Prefer`` header asks for ``respond-async`` (RFC 7240)."""
    prefer = req.get_header("Prefer") or ""
    return any(p.split(";")[0].strip().lower() == "respond-async" for p in prefer.split(","))


def _score(score: Score | None) -> Json | None:
    return None if score is None else score.to_json()


def model_metadata(entry: ModelEntry, info: VersionInfo, score: Score | None) -> Json:
    """Open Inference Protocol model metadata, with streamscore's own fields."""
    return {
        "name": entry.name,
        "versions": [str(v.version) for v in entry.versions],
        "platform": PLATFORM,
        "version": str(info.version),
        "latest_version": entry.latest.version,
        "kind": info.kind,
        "n_features": info.n_features,
        "created_at": info.created_at,
        "trained_on": dict(info.trained_on),
        "train_score": dict(info.train_score),
        "score": _score(score),
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, info.n_features]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP64", "shape": [-1]}],
    }


class Ping:
    """``GET /ping``: the original API's liveness check."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer pong."""
        resp.media = {"ping": "pong"}

    on_head = on_get


class ServerMetadata:
    """``GET /v2``: Open Inference Protocol server metadata."""

    def __init__(self, version: str) -> None:
        self.version = version

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Name, version and extensions."""
        resp.media = {"name": PLATFORM, "version": self.version, "extensions": ["respond-async"]}

    on_head = on_get


class Live:
    """``GET /v2/health/live``: the process answers."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Always live while it can answer."""
        resp.media = {"live": True}

    on_head = on_get


class Ready:
    """``GET /v2/health/ready``: Kafka reachable, a reply partition owned, a model known."""

    def __init__(self, inference: Inference) -> None:
        self.inference = inference

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """200 when ready, else 503 naming what is missing."""
        checks = self.inference.readiness()
        body: Json = {"ready": all(checks.values()), "checks": checks}
        body["worker"] = self.inference.worker()
        body["reply_partitions"] = self.inference.reply_partitions()
        if not body["ready"]:
            missing = ", ".join(name for name, ok in checks.items() if not ok)
            body["error"] = f"not ready: waiting for {missing}; retry in a moment"
            resp.status = falcon.HTTP_503
            resp.set_header("Retry-After", "1")
        resp.media = body

    on_head = on_get


class ModelList:
    """``GET /v2/models``: every model the catalogue knows."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The metadata of each model's latest version."""
        resp.media = {
            "models": [model_metadata(e, e.latest, e.last_score) for e in self.catalogue.models()]
        }

    on_head = on_get


class ModelMetadata:
    """``GET /v2/models/{name}[/versions/{version}]``."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, name: str, version: int | None = None
    ) -> None:
        """The metadata of a model (its latest version) or of one version; 404 if unknown."""
        entry = self.catalogue.get(name)
        if entry is None:
            raise GatewayError(404, f"unknown model {name!r}: GET /v2/models lists the models")
        if version is None:
            resp.media = model_metadata(entry, entry.latest, entry.last_score)
            return
        info = entry.version(version)
        if info is None:
            known = ", ".join(str(v.version) for v in entry.versions)
            raise GatewayError(
                404, f"model {name!r} has no version {version}; known versions: {known}"
            )
        resp.media = model_metadata(entry, info, entry.scores.get(version))

    on_head = on_get


class ModelReady:
    """``GET /v2/models/{name}[/versions/{version}]/ready``: OIP model readiness."""

    def __init__(self, inference: Inference) -> None:
        self.inference = inference

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, name: str, version: int | None = None
    ) -> None:
        """200 when the model (version) can be served now, 503 when not yet, 404 if unknown."""
        ready = self.inference.model_ready(name, version)
        body: Json = {"name": name, "ready": ready}
        if version is not None:
            body["version"] = str(version)
        if not ready:
            body["error"] = "the gateway is not ready to serve it yet; retry in a moment"
            resp.status = falcon.HTTP_503
            resp.set_header("Retry-After", "1")
        resp.media = body

    on_head = on_get


class ScoreBatch:
    """``POST /v2/models/{name}[/versions/{version}]/score``: quality on a labelled batch."""

    def __init__(self, inference: Inference, max_body_bytes: int) -> None:
        self.inference = inference
        self.max_body_bytes = max_body_bytes

    def on_post(
        self, req: falcon.Request, resp: falcon.Response, name: str, version: int | None = None
    ) -> None:
        """R2, RMSE and MAE of the model version's predictions of ``x`` against ``y``."""
        batch = parse_score(read_json(req, self.max_body_bytes))
        resp.media = self.inference.score(name, version, batch)


class Infer:
    """``POST /v2/models/{name}[/versions/{version}]/infer`` (``Prefer: respond-async`` too)."""

    def __init__(self, inference: Inference, max_body_bytes: int) -> None:
        self.inference = inference
        self.max_body_bytes = max_body_bytes

    def on_post(
        self, req: falcon.Request, resp: falcon.Response, name: str, version: int | None = None
    ) -> None:
        """Predict the input tensor's rows; or accept them and say where to poll."""
        body = read_json(req, self.max_body_bytes)
        rows = replace(parse_infer(body), model=name, version=version)
        if prefers_async(req):
            pending = self.inference.submit(rows, request_id(req))
            location = f"/v2/requests/{pending.token}"
            resp.status = falcon.HTTP_202
            resp.location = location
            resp.set_header("Preference-Applied", "respond-async")
            resp.media = {"id": pending.id, "status": "pending", "location": location}
            return
        answer = self.inference.predict(rows, request_id(req))
        resp.media = infer_response(answer.reply, answer.id, rows.outputs)


class AsyncResult:
    """``GET /v2/requests/{token}``: the answer to an asynchronous inference, from any worker."""

    def __init__(self, inference: Inference) -> None:
        self.inference = inference

    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        """200 with the answer, 202 while there is none yet, 404 for unknown or expired."""
        reply = self.inference.result(token)
        if reply is None:
            resp.status = falcon.HTTP_202
            resp.set_header("Retry-After", "1")
            resp.media = {"status": "pending"}
            return
        resp.media = infer_response(reply, reply.id)


class Predict:
    """``POST /predict``: the short form, ``{"x": [...]}`` or ``{"instances": [[...], ...]}``."""

    def __init__(self, inference: Inference, max_body_bytes: int) -> None:
        self.inference = inference
        self.max_body_bytes = max_body_bytes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """One prediction for ``x``, a list for ``instances``."""
        rows = parse_predict(read_json(req, self.max_body_bytes))
        answer = self.inference.predict(rows, request_id(req))
        resp.media = predict_response(answer.reply, rows, answer.id)


class OpenAPI:
    """``GET /openapi.json``: the description of every endpoint."""

    def __init__(self, document: bytes) -> None:
        self.document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The document, as shipped in the package."""
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self.document

    on_head = on_get


class MetricsResource:
    """``GET /metrics``: Prometheus text format."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """This worker's metrics."""
        resp.content_type = CONTENT_TYPE
        resp.text = self.metrics.render()

    on_head = on_get


def error_body(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> Json:
    """The contract's ``{"error": ...}`` for Falcon's own errors (404 route, 405, ...)."""
    if isinstance(exc, falcon.HTTPRouteNotFound):
        text = f"no such endpoint: {req.method} {req.path}; GET /openapi.json lists them"
    elif isinstance(exc, falcon.HTTPMethodNotAllowed):
        allowed = resp.get_header("Allow") or ""
        text = f"{req.method} is not allowed on {req.path}; allowed: {allowed}"
    else:
        text = f"{exc.title}: {exc.description}" if exc.description else str(exc.title)
    return {"error": text}
