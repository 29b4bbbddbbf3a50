"""The scorer's side of the gateway's requests (`scorer.requests.RequestStep`), step alone."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from bus.clients.base import Record
from bus.messages import InferReply, InferRequest
from bus.reply import REQUEST_ID, ReplyAddress
from regressors import make_regressor
from scorer.registry import LiveModel, ModelRegistry
from scorer.requests import RequestStep

NOW_S = 1_700_000_000.0
BODY = InferRequest("c1", [[0.5, -0.25, 1.0]]).to_bytes()


def live_model() -> LiveModel:
    x = np.random.default_rng(1).normal(size=(20, 3))
    regressor = make_regressor("multivariate").fit(x, x @ [1.0, 2.0, 3.0])
    return LiveModel("lin", 1, "multivariate", 3, 0.1, regressor)


def step() -> RequestStep:
    registry = ModelRegistry()
    registry.add(live_model())
    return RequestStep(
        replies_topic="replies",
        reply_partitions=lambda: 4,
        registry=registry,
        serving=lambda: registry.get("lin"),
        clock=lambda: NOW_S,
    )


def request(headers: list[tuple[str, bytes]]) -> Record:
    return Record("requests", 0, 7, b"c1", BODY, int(NOW_S * 1000), headers)


def headers(**override: bytes) -> list[tuple[str, bytes]]:
    values = dict(ReplyAddress("c1", "replies", 1).request_headers())
    values.update(override)
    return [(k, v) for k, v in values.items() if v]


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ([], "request header 'correlation-id' is missing"),
        (headers(**{"reply-partition": b"abc"}), "expected an integer, got 'abc'"),
        (headers(**{"reply-partition": b""}), "request header 'reply-partition' is missing"),
        (headers(**{"reply-partition": b"9"}), "reply partition 9 does not exist"),
    ],
)
def test_an_unanswerable_request_is_dead_lettered_with_its_reason(
    given: list[tuple[str, bytes]], reason: str
) -> None:
    outcome = step().process([request(given)])
    ((record, why),) = outcome.deadletters
    assert record.offset == 7 and reason in why and why.startswith("cannot answer the request")
    assert outcome.outputs == []  # nothing written anywhere else


def test_the_request_id_is_logged_and_echoed_on_the_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="scorer.requests"):
        outcome = step().process([request(headers(**{REQUEST_ID: b"trace-7"}))])
    assert outcome.deadletters == []
    assert "request c1 (request-id trace-7)" in caplog.text
    (output,) = outcome.outputs
    assert output.topic == "replies" and output.partitions == [1]
    assert output.headers == [[("correlation-id", b"c1"), (REQUEST_ID, b"trace-7")]]
    assert InferReply.from_bytes(output.values[0]).predictions


def test_an_answer_without_request_id_logs_a_dash(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="scorer.requests"):
        outcome = step().process([request(headers())])
    assert "(request-id -)" in caplog.text
    assert outcome.outputs[0].headers == [[("correlation-id", b"c1")]]
