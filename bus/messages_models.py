"""The model messages of the contract: versions on ``models``, their quality on ``scores``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bus.messages_checks import (
    integer,
    json_object,
    model_params,
    optional_bool,
    optional_integer,
    optional_number,
    quality,
    required,
    string,
    version_number,
)
from bus.messages_json import (
    MAX_FEATURES,
    MAX_NAME_CHARS,
    MODEL_KINDS,
    Json,
    describe,
    dump_object,
    load_object,
)
from core.errors import MessageError


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """A model version on the compacted ``models`` topic (key: the model name).

    ``params`` are plain numbers, each within ±`MAX_ABS_PARAM` (checked here);
    their shape is checked by the regressor that loads them
    (``regressors.regressor_from_dict``). ``signature`` is optional: the hex
    HMAC-SHA256 of the rest of the message (see `bus.signing`); readers
    without a key ignore it.
    """

    name: str
    version: int
    kind: Literal["multivariate", "polynomial"]
    n_features: int
    params: Json
    trained_on: Json
    train_score: dict[str, float | None]
    created_at: int
    signature: str | None = None

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | str | None) -> ModelVersion:
        """Parse and validate one ``models`` value."""
        obj = load_object(raw)
        kind = required(obj, "kind")
        if kind not in MODEL_KINDS:
            raise MessageError(
                f"expected one of {', '.join(MODEL_KINDS)}, got {describe(kind)}", field="kind"
            )
        n_features = integer(required(obj, "n_features"), "n_features", minimum=1)
        if n_features > MAX_FEATURES:
            raise MessageError(
                f"expected at most {MAX_FEATURES}, got {n_features}", field="n_features"
            )
        trained_on = json_object(required(obj, "trained_on"), "trained_on")
        integer(required(trained_on, "count", "trained_on.count"), "trained_on.count")
        signature = obj.get("signature")
        return cls(
            name=string(required(obj, "name"), "name", MAX_NAME_CHARS),
            version=version_number(required(obj, "version")),
            kind=kind,
            n_features=n_features,
            params=model_params(required(obj, "params")),
            trained_on=trained_on,
            train_score=quality(required(obj, "train_score"), "train_score"),
            created_at=integer(required(obj, "created_at"), "created_at"),
            signature=None if signature is None else string(signature, "signature", 128),
        )

    def to_json(self) -> Json:
        """The object form; ``signature`` is left out when unset."""
        obj: Json = {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "n_features": self.n_features,
            "params": self.params,
            "trained_on": self.trained_on,
            "train_score": self.train_score,
            "created_at": self.created_at,
        }
        if self.signature is not None:
            obj["signature"] = self.signature
        return obj

    def to_bytes(self) -> bytes:
        """Encode for ``models``."""
        return dump_object(self.to_json())


@dataclass(frozen=True, slots=True)
class Score:
    """Rolling quality of one model version over its last ``window`` labelled points.

    ``r2`` is null while it is undefined (fewer than two points or a constant label).
    ``drift`` (optional, false when absent) is true when the scorer found a drift in
    this version's residuals since its previous score; ``drift_at`` (optional, epoch
    ms) is when it last found one, and ``drifts`` (optional, 0) how many it found.
    """

    model: str
    version: int
    window: int
    count: int
    r2: float | None
    rmse: float | None
    mae: float | None
    ts: int
    drift: bool = False
    drift_at: int | None = None
    drifts: int = 0

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | str | None) -> Score:
        """Parse and validate one ``scores`` value."""
        obj = load_object(raw)
        return cls(
            model=string(required(obj, "model"), "model", MAX_NAME_CHARS),
            version=version_number(required(obj, "version")),
            window=integer(required(obj, "window"), "window", minimum=1),
            count=integer(required(obj, "count"), "count"),
            r2=optional_number(obj, "r2"),
            rmse=optional_number(obj, "rmse"),
            mae=optional_number(obj, "mae"),
            ts=integer(required(obj, "ts"), "ts"),
            drift=optional_bool(obj, "drift"),
            drift_at=optional_integer(obj, "drift_at"),
            drifts=optional_integer(obj, "drifts") or 0,
        )

    def to_json(self) -> Json:
        """The object form (the drift fields only once a drift was found)."""
        obj: Json = {
            "model": self.model,
            "version": self.version,
            "window": self.window,
            "count": self.count,
            "r2": self.r2,
            "rmse": self.rmse,
            "mae": self.mae,
            "ts": self.ts,
        }
        if self.drifts or self.drift or self.drift_at is not None:
            obj.update(drift=self.drift, drift_at=self.drift_at, drifts=self.drifts)
        return obj

    def to_bytes(self) -> bytes:
        """Encode for ``scores``."""
        return dump_object(self.to_json())
