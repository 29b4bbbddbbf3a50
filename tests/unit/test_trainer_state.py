"""The trainer's checkpoint: encode/decode round trip, parts, and restoring regressors."""

from __future__ import annotations

import numpy as np
import pytest

from regressors import make_regressor
from trainer.config import ModelSpec
from trainer.models import ModelSlot
from trainer.state import (
    Checkpoint,
    Headers,
    StateError,
    assemble_checkpoint,
    encode_checkpoint,
    part_key,
)


def _trained_checkpoint(window: int | None = None) -> tuple[Checkpoint, dict[str, ModelSlot]]:
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (500, 2))
    y = 1 + x @ [2.0, -3.0] + 0.5 * x[:, 0] ** 3
    slots = {
        "multivariate": ModelSlot.fresh(ModelSpec("multivariate", "multivariate"), window),
        "cubic": ModelSlot.fresh(ModelSpec("cubic", "polynomial", 3), window),
    }
    for slot in slots.values():
        slot.train(x, y)
    checkpoint = Checkpoint(
        group="g",
        points_topic="points",
        seq=4,
        created_at=1_700_000_000_000,
        n_features=2,
        count=500,
        offsets={0: 200, 1: 150, 2: 150},
        versions={"multivariate": 3, "cubic": 3, "retired": 9},
        deadletters=2,
        models={name: slot.regressor.state_dict() for name, slot in slots.items()},
    )
    return checkpoint, slots


def _latest(
    records: list[tuple[bytes, bytes | None, Headers]],
) -> dict[bytes, tuple[bytes | None, Headers]]:
    return {key: (value, headers) for key, value, headers in records}


@pytest.mark.parametrize("window", [None, 100])
def test_round_trip_restores_regressors_exactly(window: int | None) -> None:
    checkpoint, slots = _trained_checkpoint(window)
    restored, parts = assemble_checkpoint(_latest(encode_checkpoint(checkpoint)), "g")
    assert parts == 1
    assert restored == checkpoint
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (300, 2))
    y = x.sum(axis=1)
    for name, slot in slots.items():
        spec = slot.spec
        again = ModelSlot.restore(spec, window, restored.models[name])
        slot.regressor.partial_fit(x, y)
        again.regressor.partial_fit(x, y)
        np.testing.assert_allclose(
            again.regressor.to_dict()["coef"], slot.regressor.to_dict()["coef"], rtol=0, atol=1e-12
        )
        assert again.regressor.n_seen == slot.regressor.n_seen


def test_the_value_is_plain_json_with_the_documented_fields() -> None:
    import json

    checkpoint, _ = _trained_checkpoint()
    ((key, value, headers),) = encode_checkpoint(checkpoint)
    assert key == b"g"
    assert value is not None
    obj = json.loads(value)
    assert obj["format"] == 1
    assert obj["offsets"] == {"0": 200, "1": 150, "2": 150}
    assert obj["versions"]["retired"] == 9
    assert set(obj["models"]) == {"multivariate", "cubic"}
    assert dict(headers) == {
        "checkpoint-seq": b"4",
        "checkpoint-part": b"0",
        "checkpoint-parts": b"1",
    }


def test_big_checkpoints_are_cut_into_parts_and_stale_parts_deleted() -> None:
    checkpoint, _ = _trained_checkpoint(window=400)
    records = encode_checkpoint(checkpoint, part_bytes=1000)
    assert len(records) > 3
    assert [k for k, _, _ in records[:3]] == [b"g", b"g#1", b"g#2"]
    latest = _latest(records)
    restored, parts = assemble_checkpoint(latest, "g")
    assert parts == len(records)
    assert restored == checkpoint

    smaller = Checkpoint(group="g", points_topic="points", seq=5)
    newer = encode_checkpoint(smaller, previous_parts=parts, part_bytes=1000)
    assert [v for _, v, _ in newer[1:]] == [None] * (parts - 1)  # tombstones
    latest.update(_latest(newer))
    assert assemble_checkpoint(latest, "g") == (smaller, 1)


def test_a_missing_part_is_an_error() -> None:
    checkpoint, _ = _trained_checkpoint(window=400)
    latest = _latest(encode_checkpoint(checkpoint, part_bytes=1000))
    del latest[part_key("g", 2)]
    with pytest.raises(StateError, match="part 2"):
        assemble_checkpoint(latest, "g")


def test_no_checkpoint_or_a_deleted_one() -> None:
    assert assemble_checkpoint({}, "g") == (None, 0)
    assert assemble_checkpoint({b"g": (None, [])}, "g") == (None, 0)
    other, _ = _trained_checkpoint()
    assert assemble_checkpoint(_latest(encode_checkpoint(other)), "h") == (None, 0)


@pytest.mark.parametrize(
    "raw",
    [b"nope", b"[]", b'{"format": 2}', b'{"format": 1}', b'{"format": 1, "group": 3}'],
)
def test_malformed_checkpoints_are_state_errors(raw: bytes) -> None:
    with pytest.raises(StateError):
        Checkpoint.from_bytes(raw)


def test_restoring_into_another_configuration_is_refused() -> None:
    checkpoint, _ = _trained_checkpoint()
    with pytest.raises(StateError, match="another name"):
        ModelSlot.restore(ModelSpec("cubic", "polynomial", 2), None, checkpoint.models["cubic"])
    with pytest.raises(StateError, match="another name"):
        ModelSlot.restore(ModelSpec("cubic", "polynomial", 3), 50, checkpoint.models["cubic"])
    with pytest.raises(StateError, match="unusable"):
        ModelSlot.restore(ModelSpec("m", "multivariate"), None, {"kind": "multivariate"})


def test_fresh_regressor_state_round_trips() -> None:
    state = make_regressor("polynomial", degree=3).state_dict()
    slot = ModelSlot.restore(ModelSpec("p", "polynomial", 3), None, state)
    assert not slot.regressor.is_fitted
