"""The scorer's job written as a Quix Streams app: the peer of ``streamscore scorer``.

A plain, idiomatic Quix Streams application (``Application``, ``app.dataframe``,
``sdf.apply``, ``sdf.to_topic``) with its defaults (at-least-once, confluent-kafka
underneath, JSON serialisers, a commit every 5 s), except what it needs to read a
pre-filled topic: ``auto_offset_reset="earliest"`` (and ``state_dir``, where it would
keep state it does not have, out of the working folder). For each ``points`` value it
predicts with one linear model, given to it as a ``models`` value (the same
coefficients the scorer serves), and writes the prediction's fields
(``id, prediction, model, version, y, ts``; ``ts`` from the point, else the
record's timestamp) to the target topic, keyed like the point.

It does less than the scorer: no validation against the contract, no dead letters,
no rolling scores, no model updates. ``python -m bench.peers.quix_scorer SOURCE
TARGET --group G --model FILE [--state-dir DIR]``; it stops on SIGTERM (Quix's own handler).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bus.messages import ModelVersion
from bus.settings import KafkaSettings
from core.errors import ConfigError

log = logging.getLogger("quix_scorer")

Predict = Callable[[dict[str, Any], Any, int, Any], dict[str, Any]]


def linear_model(model: ModelVersion) -> Predict:
    """The per-point function ``sdf.apply(..., metadata=True)`` calls for ``model``."""
    if model.kind != "multivariate":
        raise ConfigError(f"model {model.name!r} is {model.kind}; the peer predicts linear models")
    coef = [float(c) for c in model.params["coef"]]
    intercept = float(model.params["intercept"])
    name, version = model.name, model.version

    def predict(point: dict[str, Any], key: Any, timestamp: int, headers: Any) -> dict[str, Any]:
        value = intercept
        for c, x in zip(coef, point["x"], strict=True):
            value += c * x
        ts = point.get("ts")
        return {
            "id": point["id"],
            "prediction": value,
            "model": name,
            "version": version,
            "y": point.get("y"),
            "ts": timestamp if ts is None else ts,
        }

    return predict


def run(
    settings: KafkaSettings,
    source: str,
    target: str,
    *,
    group: str,
    model: ModelVersion,
    state_dir: Path | None = None,
) -> None:
    """Build the app and run it until SIGTERM."""
    quixstreams = importlib.import_module("quixstreams")
    app = quixstreams.Application(
        broker_address=settings.bootstrap_servers,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
    )
    points = app.topic(source, value_deserializer="json")
    predictions = app.topic(target, value_serializer="json")
    sdf = app.dataframe(points)
    sdf = sdf.apply(linear_model(model), metadata=True)
    sdf.to_topic(predictions)
    app.run()


def main(argv: list[str] | None = None) -> int:
    """Run the peer until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.peers.quix_scorer", description=__doc__)
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--group", required=True)
    parser.add_argument("--model", type=Path, required=True, help="a models value (JSON)")
    parser.add_argument("--state-dir", type=Path, help="Quix's state folder (default: ./state)")
    args = parser.parse_args(argv)
    model = ModelVersion.from_bytes(args.model.read_bytes())
    run(
        KafkaSettings.from_env(),
        args.source,
        args.target,
        group=args.group,
        model=model,
        state_dir=args.state_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
