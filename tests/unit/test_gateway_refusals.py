"""Client mistakes are answered 4xx with a JSON error, never a 500; chunked bodies."""

from __future__ import annotations

import functools
import io
import json

import falcon
import falcon.testing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import MessageError
from gateway.app import create_app
from gateway.catalogue import Catalogue
from gateway.config import GatewayConfig
from tests.unit.gateway_fakes import (  # noqa: F401 (the fixtures, by name)
    FakeBus,
    assert_error,
    bus_fixture,
    catalogue_fixture,
    client_fixture,
    clock_fixture,
    model,
    oip,
)

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
