"""The data messages of the contract: points on ``points``, predictions on ``predictions``."""

from __future__ import annotations

from dataclasses import dataclass

from bus.messages_checks import (
    bounded_number,
    features,
    finite_number,
    integer,
    optional_integer,
    optional_number,
    required,
    string,
    version_number,
)
from bus.messages_json import (
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    Json,
    describe,
    dump_object,
    load_object,
)
from core.errors import MessageError


@dataclass(frozen=True, slots=True)
class Point:
    """A point on ``points``: features ``x``, an optional label ``y`` and event time ``ts``.

    Every feature and the label are within ±`MAX_ABS_INPUT`.
    """

    id: str
    x: list[float]
    y: float | None = None
    ts: int | None = None

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | str | None) -> Point:
        """Parse and validate one ``points`` value."""
        return cls.from_json(load_object(raw))

    @classmethod
    def from_json(cls, obj: Json) -> Point:
        """Validate a decoded ``points`` object."""
        return cls(
            id=string(required(obj, "id"), "id", MAX_ID_CHARS),
            x=features(required(obj, "x"), "x"),
            y=bounded_number(obj, "y"),
            ts=optional_integer(obj, "ts"),
        )

    def to_json(self) -> Json:
        """The object form; ``y`` and ``ts`` are left out when unset."""
        obj: Json = {"id": self.id, "x": self.x}
        if self.y is not None:
            obj["y"] = self.y
        if self.ts is not None:
            obj["ts"] = self.ts
        return obj

    def to_bytes(self) -> bytes:
        """Encode for ``points``."""
        return dump_object(self.to_json())


@dataclass(frozen=True, slots=True)
class Prediction:
    """A prediction on ``predictions``: the point's id, the value and the model that made it.

    ``calibration`` ``(a, b)``, when present, says the value is ``a + b * output``
    of that version, recalibrated after its residuals jumped (`scorer.calibration`).
    """

    id: str
    prediction: float
    model: str
    version: int
    y: float | None
    ts: int
    calibration: tuple[float, float] | None = None

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | str | None) -> Prediction:
        """Parse and validate one ``predictions`` value."""
        obj = load_object(raw)
        return cls(
            id=string(required(obj, "id"), "id", MAX_ID_CHARS),
            prediction=finite_number(required(obj, "prediction"), "prediction"),
            model=string(required(obj, "model"), "model", MAX_NAME_CHARS),
            version=version_number(required(obj, "version")),
            y=optional_number(obj, "y"),
            ts=integer(required(obj, "ts"), "ts"),
            calibration=_calibration(obj.get("calibration")),
        )

    def to_json(self) -> Json:
        """The object form (``calibration`` only when there is one)."""
        obj: Json = {
            "id": self.id,
            "prediction": self.prediction,
            "model": self.model,
            "version": self.version,
            "y": self.y,
            "ts": self.ts,
        }
        if self.calibration is not None:
            obj["calibration"] = list(self.calibration)
        return obj

    def to_bytes(self) -> bytes:
        """Encode for ``predictions``."""
        return dump_object(self.to_json())


def _calibration(value: object) -> tuple[float, float] | None:
    """The optional ``calibration`` field: None, or two finite numbers ``[a, b]``."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise MessageError(
            f"expected [a, b] (two numbers), got {describe(value)}", field="calibration"
        )
    return finite_number(value[0], "calibration[0]"), finite_number(value[1], "calibration[1]")
