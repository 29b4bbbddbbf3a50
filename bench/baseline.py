"""The in-process baseline: ``POST /predict`` answered by calling the model in the web process.

The original project's synchronous API, with streamscore's own pieces so that
only the bus differs from the gateway: the same body parsing and answer
(``gateway.payloads``), the same prediction code as the scorer
(``scorer.requests.answer`` over a ``ModelRegistry``), served by the same gunicorn
set-up (4 gthread workers). Run it with
``gunicorn 'bench.baseline:get_app()'`` and ``BENCH_BASELINE_MODELS`` naming a
file of ``models`` values (one JSON object a line).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import falcon

from bus.messages import InferRequest, ModelVersion
from gateway.payloads import GatewayError, decode_json, parse_predict, predict_response
from scorer.registry import LiveModel, ModelRegistry, load_model
from scorer.requests import answer

MAX_BODY_BYTES = 1_000_000


class Predict:
    """``POST /predict``: the short form, predicted here and now."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def serving(self) -> LiveModel | None:
        """The model named first in the file (there is no policy here)."""
        return next(iter(self.registry.latest().values()), None)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """One prediction for ``x``, a list for ``instances``."""
        rows = parse_predict(decode_json(req.bounded_stream.read(MAX_BODY_BYTES)))
        request = InferRequest(rows.id or uuid.uuid4().hex, rows.rows, rows.model, rows.version)
        reply = answer(request, self.registry, self.serving)
        if reply.error is not None:
            raise GatewayError(reply.status, reply.error)
        resp.media = predict_response(reply, rows, request.id)


def _gateway_error(
    req: falcon.Request, resp: falcon.Response, exc: GatewayError, params: object
) -> None:
    resp.status = exc.status
    resp.media = {"error": exc.message}


def create_app(registry: ModelRegistry) -> falcon.App[falcon.Request, falcon.Response]:
    """The baseline app over the models it is given."""
    app = falcon.App()
    app.add_error_handler(GatewayError, _gateway_error)
    app.add_route("/predict", Predict(registry))
    return app


def load_registry(path: Path) -> ModelRegistry:
    """A registry of the model versions in ``path`` (one ``models`` value a line)."""
    registry = ModelRegistry()
    for line in path.read_text().splitlines():
        if line.strip():
            registry.add(load_model(ModelVersion.from_bytes(line)))
    return registry


def write_models(path: Path, models: list[ModelVersion]) -> Path:
    """Write model versions for `load_registry`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(m.to_json()) + "\n" for m in models))
    return path


def get_app() -> falcon.App[falcon.Request, falcon.Response]:
    """The app for gunicorn, its models from ``BENCH_BASELINE_MODELS``."""
    return create_app(load_registry(Path(os.environ["BENCH_BASELINE_MODELS"])))
