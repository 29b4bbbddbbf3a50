"""Request and reply between the gateway and the scorer: ``requests`` and ``replies``."""

from __future__ import annotations

from dataclasses import dataclass, field

from bus.messages_checks import (
    features,
    finite_number,
    integer,
    required,
    string,
    version_number,
)
from bus.messages_json import (
    MAX_ID_CHARS,
    MAX_INSTANCES,
    MAX_NAME_CHARS,
    Json,
    describe,
    dump_object,
    load_object,
)
from core.errors import MessageError


@dataclass(frozen=True, slots=True)
class InferRequest:
    """An inference request on ``requests``: rows to predict with a model.

    ``model`` None means the scorer's serving model; ``version`` None its latest version.
    """

    id: str
    instances: list[list[float]]
    model: str | None = None
    version: int | None = None

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | str | None) -> InferRequest:
        """Parse and validate one ``requests`` value."""
        obj = load_object(raw)
        rows = required(obj, "instances")
        if not isinstance(rows, list) or not rows:
            raise MessageError(
                f"expected a non-empty array of rows, got {describe(rows)}", field="instances"
            )
        if len(rows) > MAX_INSTANCES:
            raise MessageError(
                f"expected at most {MAX_INSTANCES} rows, got {len(rows)}", field="instances"
            )
        instances = [features(row, f"instances[{i}]") for i, row in enumerate(rows)]
        width = len(instances[0])
        for i, row in enumerate(instances):
            if len(row) != width:
                raise MessageError(
                    f"every row needs {width} features like the first, got {len(row)}",
                    field=f"instances[{i}]",
                )
        model = obj.get("model")
        return cls(
            id=string(required(obj, "id"), "id", MAX_ID_CHARS),
            instances=instances,
            model=None if model is None else string(model, "model", MAX_NAME_CHARS),
            version=None if obj.get("version") is None else version_number(obj["version"]),
        )

    def to_bytes(self) -> bytes:
        """Encode for ``requests``."""
        obj: Json = {"id": self.id, "instances": self.instances}
        if self.model is not None:
            obj["model"] = self.model
        if self.version is not None:
            obj["version"] = self.version
        return dump_object(obj)


@dataclass(frozen=True, slots=True)
class InferReply:
    """The scorer's answer on ``replies``: predictions, or an error with an HTTP-like status."""

    id: str
    model: str | None = None
    version: int | None = None
    predictions: list[float] = field(default_factory=list)
    error: str | None = None
    status: int = 200

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | str | None) -> InferReply:
        """Parse and validate one ``replies`` value."""
        obj = load_object(raw)
        error = obj.get("error")
        if error is not None:
            return cls(
                id=string(required(obj, "id"), "id", MAX_ID_CHARS),
                error=str(error),
                status=integer(obj.get("status", 400), "status", minimum=400),
            )
        predictions = required(obj, "predictions")
        if not isinstance(predictions, list):
            raise MessageError(
                f"expected an array, got {describe(predictions)}", field="predictions"
            )
        return cls(
            id=string(required(obj, "id"), "id", MAX_ID_CHARS),
            model=string(required(obj, "model"), "model", MAX_NAME_CHARS),
            version=version_number(required(obj, "version")),
            predictions=[finite_number(v, f"predictions[{i}]") for i, v in enumerate(predictions)],
        )

    def to_bytes(self) -> bytes:
        """Encode for ``replies``."""
        if self.error is not None:
            return dump_object({"id": self.id, "error": self.error, "status": self.status})
        return dump_object(
            {
                "id": self.id,
                "model": self.model,
                "version": self.version,
                "predictions": self.predictions,
            }
        )
