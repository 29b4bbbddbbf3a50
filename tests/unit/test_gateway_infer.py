"""The gateway's inference through falcon.testing: OIP, the short form, asynchronous requests."""

from __future__ import annotations

import json

import falcon
import falcon.testing
import pytest

from bus.messages import InferReply, InferRequest
from bus.reply import (
    AsyncTicket,
    ReplyTimeoutError,
    RequestTooLargeError,
    TooManyPendingError,
)
from core.errors import BusError
from gateway.app import create_app
from gateway.catalogue import Catalogue
from tests.unit.gateway_fakes import (  # noqa: F401 (the fixtures, by name)
    NOW_MS,
    FakeBus,
    assert_error,
    bus_fixture,
    catalogue_fixture,
    client_fixture,
    clock_fixture,
    model,
    oip,
)

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
