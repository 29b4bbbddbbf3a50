"""Poison records: bad (or hostile) records written into a live stream, and what must happen.

Every record is its own: a value that no other record has (it carries the run's
id), so its dead letter is found by its value. ``expect`` says what the services
owe it: ``deadletter`` (it lands in ``deadletter`` with an ``error`` header) or
``predicted`` (a valid point: predicted, or dead-lettered with a reason when no
finite prediction exists).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bus.reply import CORRELATION_ID, REPLY_PARTITION, REPLY_TOPIC
from bus.topics import Topics
from regressors import MultivariateRegressor

#: Kafka's default message.max.bytes (a record batch): 1 MiB and 12 bytes.
BROKER_LIMIT = 1_048_576
DEADLETTER = "deadletter"
PREDICTED = "predicted"


@dataclass(frozen=True)
class Poison:
    """One record to write, where, and what the services must do with it."""

    name: str
    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None
    expect: str = DEADLETTER
    point_id: str | None = None  # a valid point's id (``expect`` predicted)
    meta: dict[str, Any] = field(default_factory=dict)


def _point(point_id: str, x: list[float], y: float = 1.0, **extra: Any) -> bytes:
    return json.dumps({"id": point_id, "x": x, "y": y, **extra}, separators=(",", ":")).encode()


def oversized_point(run: str, size: int = BROKER_LIMIT - 1024) -> bytes:
    """A point (otherwise valid) padded to ``size`` bytes: past the contract's limit."""
    head = _point(f"{run}-oversized", [0.5, 0.5, 0.5], pad="")
    pad = size - len(head)
    return _point(f"{run}-oversized", [0.5, 0.5, 0.5], pad="a" * pad)


def model_params(width: int, *, scale: float | None = None) -> dict[str, Any]:
    """Params of a real multivariate model of ``width`` features (every number ``scale``)."""
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (50, width))
    params = MultivariateRegressor().fit(x, x.sum(axis=1) + 0.5).to_dict()
    if scale is not None:
        params["intercept"] = scale
        params["coef"] = [scale] * width
    return params


def model_message(run: str, name: str, version: int, params: dict[str, Any]) -> bytes:
    """A ``models`` value with every field of the contract (written as is, not validated)."""
    message = {
        "name": name,
        "version": version,
        "kind": "multivariate",
        "n_features": int(params["n_features"]),
        "params": params,
        "trained_on": {"count": 50, "chaos_run": run},
        "train_score": {"r2": 1.0, "rmse": 0.0, "mae": 0.0},
        "created_at": int(time.time() * 1000),
    }
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()


def request_value(request_id: str, width: int) -> bytes:
    """A valid inference request: only its headers are wrong."""
    body = {"id": request_id, "instances": [[0.5] * width]}
    return json.dumps(body, separators=(",", ":")).encode()


def point_poisons(run: str, width: int = 3) -> list[Poison]:
    """Bad records for ``points``: oversized, a huge feature, halves, two objects in one."""
    huge = f"{run}-huge-x"
    whole = _point(f"{run}-halves", [0.5] * width).decode()
    cut = len(whole) // 2
    two = _point(f"{run}-two-a", [0.5] * width) + _point(f"{run}-two-b", [0.5] * width)
    return [
        Poison("oversized point (1 MiB - 1 KiB)", "points", oversized_point(run), b"oversized"),
        Poison(
            "huge feature x=[1e40, 0.5, 0.5]",
            "points",
            _point(huge, [1e40] + [0.5] * (width - 1)),
            huge.encode(),
            expect=PREDICTED,
            point_id=huge,
        ),
        Poison("first half of a point", "points", whole[:cut].encode(), b"halves", partition=0),
        Poison("second half of a point", "points", whole[cut:].encode(), b"halves", partition=0),
        Poison("two objects in one value", "points", two, b"two-objects"),
    ]


def request_poisons(run: str, topics: Topics, width: int = 3) -> list[Poison]:
    """Requests whose reply address is missing, malformed, absent or points at ``points``."""

    def request(name: str, tag: str, headers: dict[str, bytes] | None) -> Poison:
        cid = f"{run}-{tag}"
        return Poison(
            name,
            "requests",
            request_value(cid, width),
            cid.encode(),
            tuple(headers.items()) if headers is not None else (),
        )

    def address(topic: str, partition: bytes, tag: str) -> dict[str, bytes]:
        return {
            CORRELATION_ID: f"{run}-{tag}".encode(),
            REPLY_TOPIC: topic.encode(),
            REPLY_PARTITION: partition,
        }

    prefix = topics.points[: -len("points")]
    return [
        request(
            "request: reply-partition 999 does not exist",
            "no-partition",
            address(topics.replies, b"999", "no-partition"),
        ),
        request(
            "request: reply-topic does not exist",
            "no-topic",
            address(f"{prefix}no-such-topic", b"0", "no-topic"),
        ),
        request(
            "request: reply-topic is the points topic",
            "to-points",
            address(topics.points, b"0", "to-points"),
        ),
        request("request: no headers", "no-headers", None),
        request(
            "request: reply-partition 'abc'",
            "abc",
            address(topics.replies, b"abc", "abc"),
        ),
    ]


def model_poisons(run: str, name: str, next_version: int, width: int = 3) -> list[Poison]:
    """A model of 1e308 coefficients (its predictions overflow), and one of version 10**15."""
    return [
        Poison(
            f"model v{next_version} with 1e308 coefficients",
            "models",
            model_message(run, name, next_version, model_params(width, scale=1e308)),
            name.encode(),
            meta={"model": (name, next_version)},
        ),
        Poison(
            "model version 10**15",
            "models",
            model_message(run, name, 10**15, model_params(width)),
            name.encode(),
            meta={"model": (name, 10**15)},
        ),
    ]
