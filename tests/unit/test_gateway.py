"""The gateway's HTTP API through falcon.testing, with a fake bus and an in-memory catalogue."""

from __future__ import annotations

import functools
import io
import json
import os
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import falcon
import falcon.testing
import gunicorn
import pytest
from gunicorn import glogging
from gunicorn.config import Config
from gunicorn.http.errors import (
    ExpectationFailed,
    InvalidRequestLine,
    LimitRequestHeaders,
    LimitRequestLine,
    UnsupportedTransferCoding,
)
from gunicorn.workers.gthread import TConn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.messages import InferReply, InferRequest, ModelVersion, Score
from bus.reply import (
    AsyncTicket,
    ReplyStats,
    ReplyTimeoutError,
    RequestTooLargeError,
    TooManyPendingError,
)
from core.errors import BusError, MessageError
from gateway.app import create_app, openapi_document
from gateway.catalogue import Catalogue
from gateway.config import GatewayConfig
from gateway.worker import Framing, GatewayWorker, Limits, RequestBuffer, json_error

NOW_MS = 1_700_000_000_000


def linear(request: InferRequest) -> InferReply:
    """What the fake scorer answers: 0.5 + 2 x0 - x1 (model 'lin')."""
    values = [0.5 + 2 * row[0] - row[1] for row in request.instances]
    return InferReply(request.id, request.model or "lin", request.version or 2, values)


@dataclass
class FakeBus:
    """Stands in for `bus.reply.ReplyClient`: answers at once, or fails as told."""

    answer: Callable[[InferRequest], InferReply] = linear
    error: Exception | None = None
    up: bool = True
    partitions: list[int] = field(default_factory=lambda: [0])
    calls: list[InferRequest] = field(default_factory=list)
    async_replies: dict[str, InferReply] = field(default_factory=dict)
    submitted: dict[str, InferRequest] = field(default_factory=dict)
    request_ids: list[str | None] = field(default_factory=list)

    def call(
        self, request: InferRequest, timeout_s: float, *, request_id: str | None = None
    ) -> InferReply:
        self.calls.append(request)
        self.request_ids.append(request_id)
        if self.error is not None:
            raise self.error
        return self.answer(request)

    def submit(
        self, request: InferRequest, timeout_s: float, *, request_id: str | None = None
    ) -> AsyncTicket:
        self.request_ids.append(request_id)
        if self.error is not None:
            raise self.error
        ticket = AsyncTicket(3, 1, NOW_MS, f"async-{len(self.submitted)}")
        self.submitted[ticket.correlation_id] = request
        return ticket

    def fetch(self, ticket: AsyncTicket, timeout_s: float) -> InferReply | None:
        return self.async_replies.get(ticket.correlation_id)

    def answer_async(self) -> None:
        for correlation_id, request in self.submitted.items():
            self.async_replies[correlation_id] = self.answer(request)

    def reachable(self) -> bool:
        return self.up

    def ready(self) -> bool:
        return self.up and bool(self.partitions)

    def stats(self) -> ReplyStats:
        return ReplyStats(len(self.calls), len(self.calls), 0, 1, 2, 0, len(self.partitions))


def model(name: str = "lin", version: int = 2, n_features: int = 2) -> ModelVersion:
    return ModelVersion(
        name=name,
        version=version,
        kind="multivariate",
        n_features=n_features,
        params={
            "kind": "multivariate",
            "n_features": n_features,
            "intercept": 0.5,
            "coef": [2, -1],
        },
        trained_on={"count": 100},
        train_score={"r2": 0.9, "rmse": 0.1, "mae": 0.05},
        created_at=NOW_MS - 1000,
    )


def score(name: str = "lin", version: int = 2, ts: int = NOW_MS) -> Score:
    return Score(name, version, window=100, count=50, r2=0.8, rmse=0.2, mae=0.1, ts=ts)


@pytest.fixture
def catalogue() -> Catalogue:
    catalogue = Catalogue()
    catalogue.add_model(model(version=1))
    catalogue.add_model(model(version=2))
    catalogue.add_score(score(version=2))
    catalogue.mark_loaded()
    return catalogue


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
def clock() -> list[int]:
    return [NOW_MS]


@pytest.fixture
def client(bus: FakeBus, catalogue: Catalogue, clock: list[int]) -> falcon.testing.TestClient:
    config = GatewayConfig(max_body_bytes=10_000, async_ttl_ms=60_000)
    return falcon.testing.TestClient(
        create_app(bus, catalogue, config=config, clock_ms=lambda: clock[0], new_id=lambda: "gen")
    )


def oip(data: list[object], shape: list[int], **extra: object) -> dict[str, object]:
    tensor = {"name": "x", "shape": shape, "datatype": "FP64", "data": data}
    return {"inputs": [tensor], **extra}


def assert_error(result: falcon.testing.Result, status: int, *words: str) -> None:
    assert result.status_code == status, result.text
    assert result.headers["content-type"].startswith("application/json")
    assert set(result.json) == {"error"}
    for word in words:
        assert word in result.json["error"]


# --- plain endpoints -----------------------------------------------------------------


def test_ping(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/ping")
    assert result.status_code == 200
    assert result.json == {"ping": "pong"}


def test_server_metadata_and_liveness(client: falcon.testing.TestClient) -> None:
    meta = client.simulate_get("/v2").json
    assert meta["name"] == "streamscore" and "respond-async" in meta["extensions"]
    assert client.simulate_get("/v2/health/live").json == {"live": True}


def test_ready_when_bus_partition_and_model(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/v2/health/ready")
    assert result.status_code == 200
    assert result.json["ready"] is True
    assert all(result.json["checks"].values())


@pytest.mark.parametrize(
    ("breakage", "missing"),
    [("bus", "bus"), ("partitions", "reply_partition"), ("catalogue", "model")],
)
def test_not_ready_says_what_is_missing(
    bus: FakeBus, clock: list[int], breakage: str, missing: str
) -> None:
    catalogue = Catalogue()
    if breakage != "catalogue":
        catalogue.add_model(model())
    catalogue.mark_loaded()
    if breakage == "bus":
        bus.up = False
    if breakage == "partitions":
        bus.partitions = []
    client = falcon.testing.TestClient(create_app(bus, catalogue))
    result = client.simulate_get("/v2/health/ready")
    assert result.status_code == 503
    assert result.json["ready"] is False
    assert result.json["checks"][missing] is False
    assert missing in result.json["error"]


def test_model_list_and_metadata(client: falcon.testing.TestClient) -> None:
    models = client.simulate_get("/v2/models").json["models"]
    assert [m["name"] for m in models] == ["lin"]
    meta = client.simulate_get("/v2/models/lin").json
    assert meta["versions"] == ["1", "2"]
    assert meta["version"] == "2" and meta["latest_version"] == 2
    assert meta["kind"] == "multivariate" and meta["n_features"] == 2
    assert meta["score"]["rmse"] == 0.2 and meta["score"]["version"] == 2
    assert meta["inputs"][0]["shape"] == [-1, 2]
    older = client.simulate_get("/v2/models/lin/versions/1").json
    assert older["version"] == "1" and older["score"] is None


def test_metadata_of_unknown_model_or_version_is_404(client: falcon.testing.TestClient) -> None:
    assert_error(client.simulate_get("/v2/models/nope"), 404, "nope", "/v2/models")
    assert_error(client.simulate_get("/v2/models/lin/versions/9"), 404, "version 9", "1, 2")
    assert_error(client.simulate_get("/v2/models/lin/versions/zero"), 404)


def test_unknown_route_and_method_are_json(client: falcon.testing.TestClient) -> None:
    assert_error(client.simulate_get("/v3/nothing"), 404, "/openapi.json")
    result = client.simulate_delete("/ping")
    assert_error(result, 405, "DELETE", "GET")


def test_openapi_describes_every_route(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/openapi.json")
    assert result.status_code == 200
    document = result.json
    assert document == json.loads(openapi_document())
    assert document["openapi"].startswith("3.")
    expected = {
        "/ping",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models",
        "/v2/models/{name}",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/score",
        "/v2/models/{name}/versions/{version}/score",
        "/v2/requests/{token}",
        "/predict",
        "/openapi.json",
        "/docs",
        "/metrics",
    }
    assert set(document["paths"]) == expected


# --- model readiness (Open Inference Protocol) ------------------------------------------


def test_model_ready_and_version_ready(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/v2/models/lin/ready")
    assert result.status_code == 200 and result.json == {"name": "lin", "ready": True}
    result = client.simulate_get("/v2/models/lin/versions/1/ready")
    assert result.status_code == 200 and result.json["version"] == "1"
    assert client.simulate_head("/v2/models/lin/ready").status_code == 200


def test_model_ready_of_unknown_model_or_version_is_404(client: falcon.testing.TestClient) -> None:
    assert_error(client.simulate_get("/v2/models/nope/ready"), 404, "nope")
    assert_error(client.simulate_get("/v2/models/lin/versions/9/ready"), 404, "version 9")


def test_model_not_ready_while_the_bus_is_not(
    bus: FakeBus, client: falcon.testing.TestClient
) -> None:
    bus.partitions = []
    result = client.simulate_get("/v2/models/lin/ready")
    assert result.status_code == 503 and result.json["ready"] is False


# --- requested outputs -------------------------------------------------------------------


def test_requested_outputs_are_honoured(client: falcon.testing.TestClient) -> None:
    body = oip([1.0, 2.0], [1, 2], outputs=[{"name": "predict", "parameters": {}}])
    result = client.simulate_post("/v2/models/lin/infer", json=body)
    assert result.status_code == 200
    assert [o["name"] for o in result.json["outputs"]] == ["predict"]


def test_an_unknown_output_name_is_400(bus: FakeBus, client: falcon.testing.TestClient) -> None:
    body = oip([1.0, 2.0], [1, 2], outputs=[{"name": "probabilities"}])
    result = client.simulate_post("/v2/models/lin/infer", json=body)
    assert_error(result, 400, "outputs[0].name", "probabilities", "'predict'")
    assert bus.calls == []  # refused before the bus


@pytest.mark.parametrize(
    "outputs", ["predict", [{"parameters": {}}], [{"name": "predict", "parameters": []}]]
)
def test_malformed_outputs_are_400(client: falcon.testing.TestClient, outputs: object) -> None:
    result = client.simulate_post(
        "/v2/models/lin/infer", json=oip([1.0, 2.0], [1, 2], outputs=outputs)
    )
    assert_error(result, 400, "outputs")


# --- request ids ---------------------------------------------------------------------------


def test_the_clients_request_id_goes_on_the_bus_and_comes_back(
    bus: FakeBus, client: falcon.testing.TestClient
) -> None:
    result = client.simulate_post(
        "/predict", json={"x": [1.0, 2.0]}, headers={"X-Request-Id": "trace-7"}
    )
    assert result.status_code == 200 and result.headers["x-request-id"] == "trace-7"
    assert bus.request_ids == ["trace-7"]


def test_a_request_id_is_made_when_missing_or_unusable(
    bus: FakeBus, client: falcon.testing.TestClient
) -> None:
    made = client.simulate_post("/predict", json={"x": [1.0, 2.0]})
    assert made.headers["x-request-id"] == "gen"
    spaced = client.simulate_post(
        "/predict", json={"x": [1.0, 2.0]}, headers={"X-Request-Id": "a b"}
    )
    assert spaced.headers["x-request-id"] == "gen"
    assert bus.request_ids == ["gen", "gen"]
    assert client.simulate_get("/v3/none").headers["x-request-id"] == "gen"  # errors too


# --- scoring a version on a labelled batch -------------------------------------------------


def test_score_a_version_on_a_labelled_batch(client: falcon.testing.TestClient) -> None:
    x = [[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]]
    exact = [0.5 + 2 * a - b for a, b in x]  # model 'lin': 0.5 + 2 x0 - x1
    result = client.simulate_post("/v2/models/lin/versions/1/score", json={"x": x, "y": exact})
    assert result.status_code == 200, result.text
    body = result.json
    assert (body["model_name"], body["model_version"], body["count"]) == ("lin", "1", 3)
    assert body["r2"] == pytest.approx(1.0) and body["rmse"] == pytest.approx(0.0, abs=1e-12)
    off = [v + 1.0 for v in exact]
    latest = client.simulate_post("/v2/models/lin/score", json={"x": x, "y": off}).json
    assert latest["model_version"] == "2"
    assert latest["rmse"] == pytest.approx(1.0) and latest["mae"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"x": [[1.0, 2.0]]}, "one label per row"),
        ({"x": [[1.0, 2.0]], "y": [1.0, 2.0]}, "field 'y'"),
        ({"x": [[1.0, 2.0, 3.0]], "y": [1.0]}, "expected 2 features"),
        ({"x": [[1.0, 2.0]], "y": ["a"]}, "y[0]"),
    ],
)
def test_score_refuses_bad_batches(
    client: falcon.testing.TestClient, body: dict[str, object], words: str
) -> None:
    assert_error(client.simulate_post("/v2/models/lin/score", json=body), 400, words)


def test_score_of_an_unknown_model_is_404(client: falcon.testing.TestClient) -> None:
    result = client.simulate_post("/v2/models/nope/score", json={"x": [[1.0, 2.0]], "y": [1.0]})
    assert_error(result, 404, "nope")


# --- the API page ---------------------------------------------------------------------------


def test_docs_serve_swagger_ui_from_the_package(client: falcon.testing.TestClient) -> None:
    pytest.importorskip("swagger_ui_bundle")
    page = client.simulate_get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '"/openapi.json"' in page.text and "//" not in page.text.replace("http://", "")
    script = client.simulate_get("/docs/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000
    assert client.simulate_get("/docs/swagger-ui.css").headers["content-type"] == "text/css"
    assert_error(client.simulate_get("/docs/index.j2"), 404)


# --- inference -------------------------------------------------------------------------


def test_infer_flat_data(client: falcon.testing.TestClient, bus: FakeBus) -> None:
    body = oip([1.0, 2.0, 3.0, 1.0], [2, 2], id="req-7")
    result = client.simulate_post("/v2/models/lin/infer", json=body)
    assert result.status_code == 200, result.text
    assert result.json == {
        "model_name": "lin",
        "model_version": "2",
        "id": "req-7",
        "outputs": [{"name": "predict", "shape": [2], "datatype": "FP64", "data": [0.5, 5.5]}],
    }
    assert bus.calls == [InferRequest("req-7", [[1.0, 2.0], [3.0, 1.0]], "lin", None)]


def test_infer_nested_data_and_version(client: falcon.testing.TestClient, bus: FakeBus) -> None:
    body = oip([[1, 2], [3, 1]], [2, 2])
    result = client.simulate_post("/v2/models/lin/versions/1/infer", json=body)
    assert result.status_code == 200, result.text
    assert result.json["model_version"] == "1"
    assert result.json["id"] == "gen"  # none given: the gateway's id
    assert bus.calls[0].version == 1


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", ["not valid JSON"]),
        (b"[1, 2]", ["JSON object"]),
        (b"", ["empty"]),
        (
            b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [NaN, 1]}]}',
            ["NaN"],
        ),
        (json.dumps({"inputs": []}).encode(), ["'inputs'"]),
        (json.dumps(oip([1, 2], [2])).encode(), ["shape", "[rows, features]"]),
        (json.dumps(oip([1, 2, 3], [1, 2])).encode(), ["needs 2 numbers", "got 3"]),
        (json.dumps(oip([[1, 2], [3]], [2, 2])).encode(), ["data[1]", "rows of 2"]),
        (json.dumps(oip([1, True], [1, 2])).encode(), ["data[1]", "number"]),
        (json.dumps(oip(["1", 2], [1, 2])).encode(), ["data[0]", "number"]),
        (json.dumps(oip([1, 2], [1, 2], id="")).encode(), ["'id'"]),
        (
            b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1e999, 1]}]}',
            ["too large"],
        ),
        (json.dumps(oip([10**400, 1], [1, 2])).encode(), ["too large"]),
        (json.dumps(oip([1, -1.5e12], [1, 2])).encode(), ["data[1]", "within ±1e12"]),
        (json.dumps(oip([[1, 10**13]], [1, 2])).encode(), ["data[0][1]", "within ±1e12"]),
        (
            json.dumps(
                oip([1.5, 2], [1, 2])
                | {
                    "inputs": [
                        {"name": "x", "shape": [1, 2], "datatype": "INT64", "data": [1.5, 2]}
                    ]
                }
            ).encode(),
            ["integer"],
        ),
        (
            json.dumps(
                {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": [1, 2]}]}
            ).encode(),
            ["datatype"],
        ),
        (json.dumps({"inputs": [{"name": "x", "shape": [1, 2]}]}).encode(), ["missing"]),
        (
            json.dumps(
                {"inputs": [{"name": "x", "shape": [1, 2], "datatype": {}, "data": [1, 2]}]}
            ).encode(),
            ["datatype"],
        ),
        (
            json.dumps(
                {"inputs": [{"name": 3, "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}
            ).encode(),
            ["name"],
        ),
        (json.dumps({"inputs": ["x"]}).encode(), ["inputs[0]"]),
    ],
)
def test_infer_bad_body_is_400(
    client: falcon.testing.TestClient, bus: FakeBus, body: bytes, words: list[str]
) -> None:
    result = client.simulate_post("/v2/models/lin/infer", body=body)
    assert_error(result, 400, *words)
    assert bus.calls == []


def test_wrong_feature_count_is_400_before_the_bus(
    client: falcon.testing.TestClient, bus: FakeBus
) -> None:
    result = client.simulate_post("/v2/models/lin/infer", json=oip([1, 2, 3], [1, 3]))
    assert_error(result, 400, "expected 2 features, got 3", "'lin' v2")
    assert bus.calls == []


def test_infer_unknown_model_or_version_is_404(
    client: falcon.testing.TestClient, bus: FakeBus
) -> None:
    assert_error(
        client.simulate_post("/v2/models/nope/infer", json=oip([1, 2], [1, 2])),
        404,
        "'nope'",
        "'lin'",
    )
    result = client.simulate_post("/v2/models/lin/versions/7/infer", json=oip([1, 2], [1, 2]))
    assert_error(result, 404, "no version 7")
    assert bus.calls == []


def test_body_too_large_is_413(client: falcon.testing.TestClient, bus: FakeBus) -> None:
    data = [1.0] * 2000
    result = client.simulate_post("/v2/models/lin/infer", json=oip(data, [1000, 2]))
    assert_error(result, 413, "10000 bytes")
    assert bus.calls == []


def test_request_too_large_for_the_bus_is_413(
    client: falcon.testing.TestClient, bus: FakeBus
) -> None:
    bus.error = RequestTooLargeError("the request encodes to 2000000 bytes")
    assert_error(client.simulate_post("/predict", json={"x": [1, 2]}), 413, "encodes")


@pytest.mark.parametrize(
    ("error", "status", "word"),
    [
        (ReplyTimeoutError("no reply within 5 s"), 504, "no reply"),
        (TooManyPendingError("already waits for 1000 replies"), 503, "1000"),
        (BusError("Kafka at x cannot be reached"), 503, "cannot be reached"),
    ],
)
def test_bus_failures(
    client: falcon.testing.TestClient, bus: FakeBus, error: Exception, status: int, word: str
) -> None:
    bus.error = error
    result = client.simulate_post("/v2/models/lin/infer", json=oip([1, 2], [1, 2]))
    assert_error(result, status, word)
    if status == 503:
        assert int(result.headers["retry-after"]) >= 1


@pytest.mark.parametrize(("scorer_status", "status"), [(404, 404), (400, 400), (500, 503)])
def test_scorer_errors_are_relayed(
    client: falcon.testing.TestClient, bus: FakeBus, scorer_status: int, status: int
) -> None:
    bus.answer = lambda r: InferReply(
        r.id, error="model 'lin' version 2 is not loaded", status=scorer_status
    )
    result = client.simulate_post("/v2/models/lin/infer", json=oip([1, 2], [1, 2]))
    assert_error(result, status, "not loaded")


def test_catalogue_still_loading_is_503(bus: FakeBus) -> None:
    client = falcon.testing.TestClient(create_app(bus, Catalogue()))
    result = client.simulate_post("/v2/models/lin/infer", json=oip([1, 2], [1, 2]))
    assert_error(result, 503, "loading")


def test_no_model_yet_is_503(bus: FakeBus) -> None:
    catalogue = Catalogue()
    catalogue.mark_loaded()
    client = falcon.testing.TestClient(create_app(bus, catalogue))
    assert_error(client.simulate_post("/predict", json={"x": [1, 2]}), 503, "no model")


def test_a_bug_is_a_json_500(client: falcon.testing.TestClient, bus: FakeBus) -> None:
    bus.error = RuntimeError("boom")
    result = client.simulate_post("/v2/models/lin/infer", json=oip([1, 2], [1, 2]))
    assert_error(result, 500, "internal error")
    assert "boom" not in result.text


# --- the short form ------------------------------------------------------------------


def test_predict_one_row(client: falcon.testing.TestClient, bus: FakeBus) -> None:
    result = client.simulate_post("/predict", json={"x": [1, 2]})
    assert result.status_code == 200, result.text
    assert result.json == {"id": "gen", "model": "lin", "version": 2, "prediction": 0.5}
    assert bus.calls[0].model is None  # the scorer's serving model


def test_predict_instances_with_model(client: falcon.testing.TestClient, bus: FakeBus) -> None:
    body = {"instances": [[1, 2], [3, 1]], "model": "lin", "version": 1, "id": "abc"}
    result = client.simulate_post("/predict", json=body)
    assert result.json == {"id": "abc", "model": "lin", "version": 1, "predictions": [0.5, 5.5]}


@pytest.mark.parametrize(
    ("body", "status", "word"),
    [
        ({"x": [1, 2], "instances": [[1, 2]]}, 400, "either"),
        ({}, 400, "either"),
        ({"x": []}, 400, "at least one"),
        ({"x": [1, 2, 3]}, 400, "expected 2 features, got 3"),
        ({"x": [1e12, 1.0000001e12]}, 400, "field 'x[1]'"),
        ({"instances": [[1, 2], [1]]}, 400, "like the first"),
        ({"instances": []}, 400, "non-empty"),
        ({"x": [1, 2], "version": 1}, 400, "needs 'model'"),
        ({"x": [1, 2], "version": 0, "model": "lin"}, 400, "'version'"),
        ({"x": [1, 2], "model": "other"}, 404, "'other'"),
    ],
)
def test_predict_errors(
    client: falcon.testing.TestClient, bus: FakeBus, body: dict[str, object], status: int, word: str
) -> None:
    assert_error(client.simulate_post("/predict", json=body), status, word)
    assert bus.calls == []


# --- asynchronous inference ----------------------------------------------------------------


def test_respond_async_then_poll(client: falcon.testing.TestClient, bus: FakeBus) -> None:
    body = oip([1, 2], [1, 2], id="slow-1")
    result = client.simulate_post(
        "/v2/models/lin/infer", json=body, headers={"Prefer": "respond-async, wait=5"}
    )
    assert result.status_code == 202, result.text
    location = result.headers["location"]
    assert location.startswith("/v2/requests/3.")
    assert result.headers["preference-applied"] == "respond-async"
    assert result.json == {"id": "slow-1", "status": "pending", "location": location}
    assert bus.calls == []  # not waited for

    pending = client.simulate_get(location)
    assert pending.status_code == 202
    assert pending.headers["retry-after"] == "1"

    bus.answer_async()
    done = client.simulate_get(location)
    assert done.status_code == 200
    assert done.json["id"] == "slow-1" and done.json["outputs"][0]["data"] == [0.5]


def test_async_scorer_error_is_relayed(client: falcon.testing.TestClient, bus: FakeBus) -> None:
    bus.answer = lambda r: InferReply(r.id, error="bad request: x", status=400)
    location = client.simulate_post(
        "/v2/models/lin/infer", json=oip([1, 2], [1, 2]), headers={"Prefer": "respond-async"}
    ).headers["location"]
    bus.answer_async()
    assert_error(client.simulate_get(location), 400, "bad request")


def test_async_checks_the_request_first(client: falcon.testing.TestClient, bus: FakeBus) -> None:
    result = client.simulate_post(
        "/v2/models/lin/infer", json=oip([1, 2, 3], [1, 3]), headers={"Prefer": "respond-async"}
    )
    assert_error(result, 400, "expected 2 features")
    assert bus.submitted == {}


def test_unknown_or_expired_tokens_are_404(
    client: falcon.testing.TestClient, clock: list[int]
) -> None:
    assert_error(client.simulate_get("/v2/requests/garbage"), 404, "not a request token")
    token = AsyncTicket(3, 1, NOW_MS, "async-0").token()
    clock[0] = NOW_MS + 61_000
    assert_error(client.simulate_get(f"/v2/requests/{token}"), 404, "expired")
    clock[0] = NOW_MS - 3_600_000
    assert_error(client.simulate_get(f"/v2/requests/{token}"), 404, "expired")


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_count_routes_statuses_and_bus(client: falcon.testing.TestClient) -> None:
    client.simulate_get("/ping")
    client.simulate_get("/ping")
    client.simulate_get("/v2/models/nope")
    client.simulate_get("/no/such/thing")
    result = client.simulate_get("/metrics")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = result.text
    lines = text.splitlines()

    def value(prefix: str) -> float:
        found = [line for line in lines if line.startswith(prefix)]
        assert len(found) == 1, (prefix, found)
        return float(found[0].rsplit(" ", 1)[1])

    ping = [line for line in lines if 'route="/ping"' in line and "requests_total" in line]
    assert len(ping) == 1 and ping[0].endswith(" 2.0") and 'status="200"' in ping[0]
    assert any('route="/v2/models/{name}"' in line and 'status="404"' in line for line in lines)
    assert any('route="unmatched"' in line for line in lines)
    assert value("streamscore_gateway_bus_timeouts_total ") == 1
    assert value("streamscore_gateway_late_replies_total ") == 2
    assert value("streamscore_gateway_pending_requests ") == 0
    buckets = [
        line
        for line in lines
        if line.startswith("streamscore_gateway_request_duration_seconds_bucket")
        and 'route="/ping"' in line
    ]
    assert buckets[-1].endswith(" 2.0") and 'le="+Inf"' in buckets[-1]


# --- client mistakes are 4xx with a JSON error, never a 500 -------------------------------

HUGE = "1" * 5000  # past Python's int/str conversion limit (4300 digits)


def put(template: str, value: str) -> str:
    """``template`` with its ``@`` replaced by ``value`` (JSON text json.dumps cannot write)."""
    return template.replace("@", value)


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/predict", put('{"x": [@, 1]}', HUGE), ["field 'x[0]'", "5000 digits", "too large"]),
        ("/predict", put('{"x": [-@, 1]}', HUGE), ["field 'x[0]'", "too large"]),
        ("/predict", put('{"x": @}', HUGE), ["field 'x'", "array"]),
        ("/predict", put('{"instances": [[1, 2], [@, 2]]}', HUGE), ["field 'instances[1][0]'"]),
        ("/predict", put('{"x": [1, 2], "model": "lin", "version": @}', HUGE), ["field 'version'"]),
        ("/predict", put('{"x": [1, 2], "model": "lin", "version": @}', "9" * 4000), ["'version'"]),
        ("/predict", put('{"x": [1, 2], "model": "lin", "version": @}', str(2**53)), ["'version'"]),
        ("/predict", put('{"x": [1, 2], "id": @}', HUGE), ["field 'id'"]),
        (
            "/v2/models/lin/infer",
            json.dumps(oip([0, 1], [1, 2])).replace("[0, 1]", f"[{HUGE}, 1]"),
            ["field 'inputs[0].data[0]'", "too large"],
        ),
        (
            "/v2/models/lin/infer",
            json.dumps(oip([[0, 1]], [1, 2])).replace("[[0, 1]]", f"[[1, {HUGE}]]"),
            ["field 'inputs[0].data[0][1]'", "too large"],
        ),
        (
            "/v2/models/lin/infer",
            json.dumps(oip([0, 1], [1, 2])).replace("[1, 2]", f"[{HUGE}, 2]"),
            ["field 'inputs[0].shape'"],
        ),
    ],
)
def test_huge_integers_are_400_naming_the_field(
    client: falcon.testing.TestClient, bus: FakeBus, path: str, body: str, words: list[str]
) -> None:
    assert_error(client.simulate_post(path, body=body), 400, *words)
    assert bus.calls == []


def test_a_huge_integer_in_a_field_nobody_reads_is_ignored(
    client: falcon.testing.TestClient,
) -> None:
    result = client.simulate_post("/predict", body=put('{"x": [1, 2], "note": @}', HUGE))
    assert result.status_code == 200, result.text
    assert result.json["prediction"] == 0.5


@pytest.mark.parametrize("name", ["id", "model"])
def test_a_lone_surrogate_in_a_string_is_400(
    client: falcon.testing.TestClient, bus: FakeBus, name: str
) -> None:
    body = put('{"x": [1, 2], "@": "a\\ud800b"}', name)
    assert_error(client.simulate_post("/predict", body=body), 400, f"field '{name}'", "Unicode")
    assert bus.calls == []


def test_a_path_that_is_not_utf8_is_404_not_500(client: falcon.testing.TestClient) -> None:
    assert_error(client.simulate_get("/v2/models/%ED%A0%80"), 404)
    assert_error(client.simulate_post("/v2/models/%ff/infer", json=oip([1, 2], [1, 2])), 404)


def test_a_huge_version_in_the_path_is_404(client: falcon.testing.TestClient) -> None:
    assert_error(client.simulate_get("/v2/models/lin/versions/" + HUGE), 404)


def test_a_message_error_from_the_contract_is_400(
    client: falcon.testing.TestClient, bus: FakeBus
) -> None:
    # a contract check made when the request is built (the bus client here), not by the gateway
    bus.error = MessageError("expected at most 128 characters, got 129", field="model")
    result = client.simulate_post("/predict", json={"x": [1, 2]})
    assert_error(result, 400, "field 'model'", "128 characters")


@functools.cache
def fuzz_client() -> falcon.testing.TestClient:
    """One app for every generated body (the fake bus answers any request)."""
    catalogue = Catalogue()
    catalogue.add_model(model(version=1))
    catalogue.mark_loaded()
    return falcon.testing.TestClient(create_app(FakeBus(), catalogue))


def _json_text(leaf: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """JSON documents as text, so that they can hold what ``json.dumps`` cannot write."""
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
            st.dictionaries(st.sampled_from(KEYS), inner, max_size=4).map(
                lambda obj: "{" + ", ".join(f'"{k}": {v}' for k, v in obj.items()) + "}"
            ),
        ),
        max_leaves=12,
    )


KEYS = ["x", "instances", "inputs", "model", "version", "id", "name", "shape", "datatype", "data"]
LEAVES = st.one_of(
    st.sampled_from(["null", "true", "false", "NaN", "-Infinity", "1e999", "-0", "0.5"]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=4290, max_value=4400).map(lambda n: "9" * n),  # around the limit
    st.floats(allow_nan=False, allow_infinity=False).map(json.dumps),
    st.text(max_size=6).map(json.dumps),
    st.sampled_from(['"\\ud800"', '"FP64"', '"INT8"', '"lin"', '"x"']),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(["/predict", "/v2/models/lin/infer", "/v2/models/lin/versions/1/infer"]),
    body=_json_text(LEAVES),
    tail=st.sampled_from(["", "]", "}", ",", " x"]),
)
def test_no_body_is_ever_answered_with_a_500(path: str, body: str, tail: str) -> None:
    result = fuzz_client().simulate_post(path, body=body + tail)
    assert result.status_code in (200, 400, 404), (body + tail, result.status_code, result.text)
    if result.status_code != 200:
        assert set(result.json) == {"error"}


# --- chunked bodies ------------------------------------------------------------------------


def chunked_post(
    app: falcon.App[falcon.Request, falcon.Response], path: str, body: bytes
) -> tuple[str, dict[str, str], bytes]:
    """POST ``body`` as a server hands over a chunked request: no Content-Length, read to EOF."""
    environ = falcon.testing.create_environ(
        method="POST", path=path, body=body, headers={"Transfer-Encoding": "chunked"}
    )
    environ.pop("CONTENT_LENGTH", None)
    start = falcon.testing.StartResponseMock()
    answer = b"".join(app(environ, start))
    return start.status, dict(start.headers), answer


def test_a_chunked_body_is_read(bus: FakeBus, catalogue: Catalogue) -> None:
    app = create_app(bus, catalogue, config=GatewayConfig(max_body_bytes=1000))
    status, _, answer = chunked_post(app, "/predict", b'{"x": [1, 2]}')
    assert status.startswith("200"), answer
    assert json.loads(answer)["prediction"] == 0.5
    status, _, answer = chunked_post(
        app, "/v2/models/lin/infer", json.dumps(oip([3, 1], [1, 2])).encode()
    )
    assert status.startswith("200"), answer
    assert json.loads(answer)["outputs"][0]["data"] == [5.5]


def test_a_chunked_body_over_the_limit_is_413(bus: FakeBus, catalogue: Catalogue) -> None:
    app = create_app(bus, catalogue, config=GatewayConfig(max_body_bytes=1000))
    body = json.dumps({"instances": [[1.0, 2.0]] * 200}).encode()
    assert len(body) > 1000
    status, _, answer = chunked_post(app, "/predict", body)
    assert status.startswith("413"), answer
    assert "1000 bytes" in json.loads(answer)["error"]
    assert bus.calls == []


class BrokenChunks(io.BytesIO):
    """A server's de-chunking stream that meets a malformed chunk."""

    def read(self, size: int | None = -1, /) -> bytes:
        raise ValueError("Invalid chunk size: 'zz'")


def test_a_body_the_server_cannot_read_is_400(client: falcon.testing.TestClient) -> None:
    environ = falcon.testing.create_environ(
        method="POST", path="/predict", headers={"Transfer-Encoding": "chunked"}
    )
    environ["wsgi.input"] = BrokenChunks()
    start = falcon.testing.StartResponseMock()
    answer = b"".join(client.app(environ, start))
    assert start.status.startswith("400")
    assert "Invalid chunk size" in json.loads(answer)["error"]


def test_a_body_without_length_or_chunks_is_empty(client: falcon.testing.TestClient) -> None:
    environ = falcon.testing.create_environ(method="POST", path="/predict", body=b'{"x": [1, 2]}')
    environ.pop("CONTENT_LENGTH")
    start = falcon.testing.StartResponseMock()
    answer = b"".join(client.app(environ, start))
    assert start.status.startswith("400")
    assert "empty" in json.loads(answer)["error"]


# --- HEAD ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/ping",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models",
        "/v2/models/lin",
        "/v2/models/lin/versions/1",
        "/openapi.json",
        "/metrics",
    ],
)
def test_head_answers_like_get_without_a_body(client: falcon.testing.TestClient, path: str) -> None:
    get = client.simulate_get(path)
    head = client.simulate_head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_head_of_an_unknown_model_is_404(client: falcon.testing.TestClient) -> None:
    assert client.simulate_head("/v2/models/nope").status_code == 404


# --- the gunicorn worker: framing requests, refusals in JSON -----------------------------------

SMALL = Limits(line=100, fields=5, field=50, body=100)


def feed_all(buffer: RequestBuffer, data: bytes, step: int = 1) -> list[Framing]:
    """Feed ``data`` ``step`` bytes at a time; every verdict, in order."""
    return [buffer.feed(data[i : i + step]) for i in range(0, len(data), step)]


@pytest.mark.parametrize(
    "data",
    [
        b"GET /ping HTTP/1.1\r\nHost: g\r\n\r\n",
        b"\r\nGET /ping HTTP/1.1\r\nHost: g\r\n\r\n",  # one empty line first is allowed
        b"POST /predict HTTP/1.1\r\nContent-Length: 13\r\n\r\n" + b'{"x": [1, 2]}',
        b"POST /predict HTTP/1.1\r\ncontent-length:  0013 \r\n\r\n" + b'{"x": [1, 2]}',
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b'6\r\n{"x": \r\n7;ext=1\r\n[1, 2]}\r\n0\r\n\r\n',
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n2\r\nab\r\n0\r\nT: v\r\n\r\n",
    ],
    ids=["get", "leading-crlf", "length", "length-spaced", "chunked", "chunked-trailer"],
)
def test_a_request_is_ready_only_once_it_is_whole(data: bytes) -> None:
    byte_by_byte = feed_all(RequestBuffer(SMALL), data)
    assert byte_by_byte[-1] is Framing.READY
    assert set(byte_by_byte[:-1]) <= {Framing.WAIT}
    at_once = RequestBuffer(SMALL)
    assert at_once.feed(data) is Framing.READY
    assert at_once.take() == data


def test_pipelined_requests_are_handed_over_together() -> None:
    two = b"GET /ping HTTP/1.1\r\n\r\n" + b"GET /v2 HTTP/1.1\r\n\r\n"
    buffer = RequestBuffer(SMALL)
    assert buffer.feed(two) is Framing.READY
    assert buffer.take() == two


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"POST /p HTTP/1.1\r\nContent-Length: 101\r\n\r\n", Framing.BODY_TOO_LARGE),
        (
            b"POST /p HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
            Framing.BODY_TOO_LARGE,
        ),
        (b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n", Framing.BODY_TOO_LARGE),
        (
            b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"fffffffffffffffffffffff\r\n",
            Framing.BODY_TOO_LARGE,
        ),
        (b"GET /" + b"a" * 100 + b" HTTP/1.1", Framing.LINE_TOO_LONG),
        (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: g\r\n\r\n", Framing.LINE_TOO_LONG),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 80, Framing.HEAD_TOO_LARGE),
        (b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", Framing.BAD_CHUNKS),
        (b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", Framing.BAD_CHUNKS),
        (b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 60, Framing.BAD_CHUNKS),
        (b"GET / HTTP/1.1\nHost: g\n", Framing.BAD_LINE_END),
        (b"GET / HTTP/1.1\r\nHost: g\n", Framing.BAD_LINE_END),
        # what gunicorn refuses from the head alone: handed over at once, gunicorn answers
        (b"GET / HTTP/1.1\r\nBroken\r\n\r\n", Framing.READY),
        (b"POST /p HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", Framing.READY),
        (b"POST /p HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", Framing.READY),
        (
            b"POST /p HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            Framing.READY,
        ),
        (b"POST /p HTTP/1.1\r\nTransfer-Encoding: br\r\n\r\n", Framing.READY),
        (b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Framing.READY),
        (b"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Framing.READY),
        (b"POST /p HTTP/1.1\r\nExpect: tea\r\nContent-Length: 5\r\n\r\n", Framing.READY),
    ],
)
def test_what_cannot_be_served_is_known_without_waiting(data: bytes, verdict: Framing) -> None:
    assert RequestBuffer(SMALL).feed(data) is verdict


def test_expect_100_continue_is_answered_by_the_worker_not_by_gunicorn() -> None:
    buffer = RequestBuffer(SMALL)
    head = b"POST /p HTTP/1.1\r\nHost: g\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n"
    assert buffer.feed(head) is Framing.WAIT
    assert buffer.continue_wanted
    assert buffer.feed(b"{}") is Framing.READY
    assert not buffer.continue_wanted
    assert buffer.take() == b"POST /p HTTP/1.1\r\nHost: g\r\nContent-Length: 2\r\n\r\n{}"
    whole = RequestBuffer(SMALL)
    assert whole.feed(head + b"{}") is Framing.READY
    assert not whole.continue_wanted  # the body came with the head: nothing to answer


def test_limits_follow_gunicorn_settings() -> None:
    assert Limits.of(Config(), 1000) == Limits(line=4094, fields=100, field=8190, body=1000)
    cfg = Config()
    cfg.set("limit_request_line", 0)
    cfg.set("limit_request_fields", 0)
    cfg.set("limit_request_field_size", 0)
    unlimited = Limits.of(cfg, 5)
    assert (unlimited.line, unlimited.fields, unlimited.field) == (1024 * 1024, 32768, 8190)
    assert Limits(line=10, fields=2, field=3, body=1).head == 10 + 4 + 2 * 5 + 4


def parse_answer(raw: bytes) -> tuple[int, dict[str, str], dict[str, str]]:
    """Status, headers and JSON body of one HTTP response."""
    top, _, body = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert int(headers["content-length"]) == len(body)
    return int(lines[0].split(" ")[1]), headers, json.loads(body)


@pytest.mark.parametrize(
    ("exc", "status", "words"),
    [
        (InvalidRequestLine("GARBAGE"), 400, ["GARBAGE", "request line"]),
        (LimitRequestLine(5000, 4094), 414, ["4094 bytes", "shorten"]),
        (LimitRequestHeaders("limit request headers fields"), 431, ["100 fields", "8190 bytes"]),
        (UnsupportedTransferCoding("br"), 501, ["Transfer-Encoding", "chunked"]),
        (ExpectationFailed("tea"), 417, ["100-continue"]),
        (RuntimeError("secret detail"), 500, ["internal error"]),
    ],
)
def test_gunicorn_refusals_are_written_as_json(
    exc: Exception, status: int, words: list[str]
) -> None:
    cfg = Config()
    worker = GatewayWorker(1, os.getpid(), [], None, 30, cfg, glogging.Logger(cfg))
    ours, theirs = socket.socketpair()
    with ours, theirs:
        worker.handle_error(None, ours, ("192.0.2.1", 4321), exc)
        ours.shutdown(socket.SHUT_WR)
        raw = b"".join(iter(lambda: theirs.recv(65536), b""))
    answer_status, headers, body = parse_answer(raw)
    assert answer_status == status
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert set(body) == {"error"}
    for word in words:
        assert word in body["error"]
    assert "secret" not in body["error"]


def test_json_error_is_a_whole_closing_response() -> None:
    status, headers, body = parse_answer(json_error(408, "too slow: send it again"))
    assert (status, headers["connection"], body) == (
        408,
        "close",
        {"error": "too slow: send it again"},
    )
    assert json_error(413, "x").startswith(b"HTTP/1.1 413 ")


# --- the worker's event loop, on socket pairs (no thread takes the requests) -------------------


class HeldPool:
    """Stands in for the worker's thread pool: keeps what it is given, runs nothing."""

    def __init__(self) -> None:
        self.taken: list[TConn] = []

    def submit(self, fn: object, conn: TConn) -> Future[bool]:
        self.taken.append(conn)
        return Future()


@dataclass
class Loop:
    """A `GatewayWorker` with a real selector, a fake clock and a held pool."""

    worker: GatewayWorker
    pool: HeldPool
    now: list[float]
    clients: list[socket.socket] = field(default_factory=list)

    def connect(self) -> tuple[TConn, socket.socket]:
        ours, theirs = socket.socketpair()
        self.clients += [ours, theirs]
        conn = TConn(self.worker.cfg, ours, ("192.0.2.1", 4321), ("127.0.0.1", 8000))
        self.worker.nr_conns += 1
        self.worker.enqueue_req(conn)
        return conn, theirs

    def spin(self) -> None:
        for _ in range(5):
            self.worker.wait_for_and_dispatch_events(0.01)

    def later(self, seconds: float) -> None:
        self.now[0] += seconds
        self.worker.murder_keepalived()


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(2)
    return b"".join(iter(lambda: sock.recv(65536), b""))


@pytest.fixture
def loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[Loop]:
    monkeypatch.setenv("STREAMSCORE_GATEWAY_MAX_BODY_BYTES", "200000")
    monkeypatch.setenv("STREAMSCORE_GATEWAY_CLIENT_TIMEOUT_MS", "2000")
    cfg = Config()
    worker = GatewayWorker(1, os.getpid(), [], None, 30, cfg, glogging.Logger(cfg))
    worker.poller = selectors.DefaultSelector()
    pool = HeldPool()
    worker.tpool = pool
    now = [100.0]
    worker.clock = lambda: now[0]
    state = Loop(worker, pool, now)
    try:
        yield state
    finally:
        worker.poller.close()
        for sock in state.clients:
            sock.close()


def test_the_loop_hands_a_request_over_only_once_it_is_whole(loop: Loop) -> None:
    request = b"POST /predict HTTP/1.1\r\nContent-Length: 13\r\n\r\n" + b'{"x": [1, 2]}'
    conn, client = loop.connect()
    client.sendall(request[:-5])
    loop.spin()
    assert loop.pool.taken == []
    client.sendall(request[-5:])
    loop.spin()
    assert loop.pool.taken == [conn]
    assert conn.parser.unreader.buf.getvalue() == request
    assert loop.worker.incoming == {} and loop.worker.buffered == 0


def test_the_loop_answers_100_continue_then_waits_for_the_body(loop: Loop) -> None:
    conn, client = loop.connect()
    client.sendall(b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    loop.spin()
    client.settimeout(2)
    assert client.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert loop.pool.taken == []
    client.sendall(b"{}")
    loop.spin()
    assert loop.pool.taken == [conn]
    assert b"Expect" not in conn.parser.unreader.buf.getvalue()


def test_an_unfinished_request_is_answered_408_and_closed(loop: Loop) -> None:
    _, client = loop.connect()
    client.sendall(b"POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
    loop.spin()
    loop.later(1.9)
    assert loop.worker.incoming  # not yet
    loop.later(0.2)
    client.shutdown(socket.SHUT_WR)  # the client reads the answer, then closes
    loop.spin()
    status, headers, body = parse_answer(read_all(client))
    assert status == 408 and headers["connection"] == "close"
    assert "did not arrive in time" in body["error"]
    assert loop.worker.nr_conns == 0 and not loop.worker.closing
    assert loop.pool.taken == []


def test_a_silent_connection_is_closed_without_an_answer(loop: Loop) -> None:
    _, client = loop.connect()
    loop.spin()
    loop.later(2.1)
    assert read_all(client) == b""
    assert loop.worker.nr_conns == 0


def test_a_declared_body_over_the_limit_is_413_before_it_is_sent(loop: Loop) -> None:
    _, client = loop.connect()
    client.sendall(b"POST /p HTTP/1.1\r\nContent-Length: 200001\r\n\r\n")
    loop.spin()
    client.shutdown(socket.SHUT_WR)
    loop.spin()
    status, _, body = parse_answer(read_all(client))
    assert status == 413 and "200000 bytes" in body["error"]
    assert loop.worker.nr_conns == 0 and loop.pool.taken == []


def test_large_requests_are_refused_503_past_the_worker_budget(loop: Loop) -> None:
    loop.worker.budget = 100_000
    head = b"POST /p HTTP/1.1\r\nContent-Length: 150000\r\n\r\n"
    _, first = loop.connect()
    first.sendall(head + b"1" * 90_000)
    loop.spin()
    _, second = loop.connect()
    second.sendall(head + b"2" * 20_000)  # small so far: read whatever the others hold
    loop.spin()
    assert loop.worker.buffered > loop.worker.budget
    second.sendall(b"2" * 50_000)  # now large, and the budget is spent
    loop.spin()
    second.shutdown(socket.SHUT_WR)
    loop.spin()
    status, headers, body = parse_answer(read_all(second))
    assert status == 503 and headers["retry-after"] == "1"
    assert "retry" in body["error"]
    ping, client = loop.connect()
    client.sendall(b"GET /ping HTTP/1.1\r\n\r\n")
    loop.spin()
    assert loop.pool.taken == [ping]  # small requests still go through
    assert len(loop.worker.incoming) == 1  # the first one, still arriving


def test_a_finished_connection_closes_in_the_loop_without_blocking_it(loop: Loop) -> None:
    conn, client = loop.connect()
    client.sendall(b"GET /ping HTTP/1.1\r\nConnection: close\r\n\r\n")
    loop.spin()
    done: Future[bool] = Future()
    done.set_result(False)  # the thread answered and the connection is not kept alive
    started = time.monotonic()
    loop.worker.finish_request(conn, done)
    assert time.monotonic() - started < 0.1  # the client has not closed: no waiting for it
    assert conn in loop.worker.closing and loop.worker.nr_conns == 1
    client.close()
    loop.spin()
    assert loop.worker.closing == {} and loop.worker.nr_conns == 0


def test_on_another_gunicorn_the_worker_leaves_reading_to_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gunicorn, "version_info", (23, 0, 0))
    cfg = Config()
    worker = GatewayWorker(1, os.getpid(), [], None, 30, cfg, glogging.Logger(cfg))
    assert worker.buffering is False
    pool = HeldPool()
    worker.tpool = pool
    ours, theirs = socket.socketpair()
    with ours, theirs:
        conn = TConn(cfg, ours, ("192.0.2.1", 4321), ("127.0.0.1", 8000))
        worker.enqueue_req(conn)  # straight to a thread, as gthread does
        assert pool.taken == [conn] and worker.incoming == {}
