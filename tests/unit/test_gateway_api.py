"""The gateway's HTTP API through falcon.testing: endpoints, readiness, ids, scoring, metrics."""

from __future__ import annotations

import json

import falcon
import falcon.testing
import pytest

from gateway.app import create_app, openapi_document
from gateway.catalogue import Catalogue
from tests.unit.gateway_fakes import (  # noqa: F401 (the fixtures, by name)
    FakeBus,
    assert_error,
    bus_fixture,
    catalogue_fixture,
    client_fixture,
    clock_fixture,
    model,
    oip,
    score,
)

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
