"""Doubles for the gateway's unit tests: a fake bus, models, a catalogue and a test client."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import falcon
import falcon.testing
import pytest

from bus.messages import InferReply, InferRequest, ModelVersion, Score
from bus.reply import (
    AsyncTicket,
    ReplyStats,
)
from gateway.app import create_app
from gateway.catalogue import Catalogue
from gateway.config import GatewayConfig

__all__ = [
    "NOW_MS",
    "FakeBus",
    "assert_error",
    "bus_fixture",
    "catalogue_fixture",
    "client_fixture",
    "clock_fixture",
    "linear",
    "model",
    "oip",
    "parse_answer",
    "score",
]

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

    def owned_partitions(self) -> list[int]:
        return list(self.partitions)

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


@pytest.fixture(name="catalogue")
def catalogue_fixture() -> Catalogue:
    catalogue = Catalogue()
    catalogue.add_model(model(version=1))
    catalogue.add_model(model(version=2))
    catalogue.add_score(score(version=2))
    catalogue.mark_loaded()
    return catalogue


@pytest.fixture(name="bus")
def bus_fixture() -> FakeBus:
    return FakeBus()


@pytest.fixture(name="clock")
def clock_fixture() -> list[int]:
    return [NOW_MS]


@pytest.fixture(name="client")
def client_fixture(
    bus: FakeBus, catalogue: Catalogue, clock: list[int]
) -> falcon.testing.TestClient:
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


def parse_answer(raw: bytes) -> tuple[int, dict[str, str], dict[str, str]]:
    """Status, headers and JSON body of one HTTP response."""
    top, _, body = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert int(headers["content-length"]) == len(body)
    return int(lines[0].split(" ")[1]), headers, json.loads(body)
