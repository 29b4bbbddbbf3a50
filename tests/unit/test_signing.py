"""Model signatures: signed versions verify, changed ones or other keys do not; keys stay hidden."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from bus.messages import ModelVersion
from bus.signing import (
    KEY_VARIABLE,
    ModelKey,
    canonical_bytes,
    model_key_from_env,
    sign,
    verify,
)
from core.errors import ConfigError, MessageError, ModelError
from regressors import MultivariateRegressor
from scorer.registry import load_model

SECRET = "s3cret-model-key-0123456789abcdef"
KEY = ModelKey(SECRET.encode())
OTHER = ModelKey(b"another-key-of-the-same-length!!")


def model(**changes: Any) -> ModelVersion:
    x = np.random.default_rng(0).uniform(-1, 1, (40, 2))
    params = MultivariateRegressor().fit(x, 2 * x[:, 0] - x[:, 1] + 0.5).to_dict()
    base = ModelVersion(
        name="multivariate",
        version=3,
        kind="multivariate",
        n_features=2,
        params=params,
        trained_on={"count": 40, "offsets": {"0": 40}},
        train_score={"r2": 0.98, "rmse": 0.12, "mae": 0.09},
        created_at=1_700_000_000_000,
    )
    return replace(base, **changes)


def through_the_bus(message: ModelVersion) -> ModelVersion:
    return ModelVersion.from_bytes(message.to_bytes())


def test_a_signed_version_verifies_after_the_bus() -> None:
    signed = sign(model(), KEY)
    assert signed.signature is not None and len(signed.signature) == 64
    assert int(signed.signature, 16) >= 0  # lowercase hex
    verify(signed, KEY)
    received = through_the_bus(signed)
    assert received == signed
    verify(received, KEY)
    assert json.loads(signed.to_bytes())["signature"] == signed.signature


def test_an_unsigned_version_has_no_signature_field() -> None:
    assert "signature" not in json.loads(model().to_bytes())
    assert through_the_bus(model()).signature is None


def change_coefficient(m: ModelVersion) -> ModelVersion:
    params = {**m.params, "coef": [m.params["coef"][0] + 1e-9, *m.params["coef"][1:]]}
    return replace(m, params=params)


@pytest.mark.parametrize(
    "tamper",
    [
        change_coefficient,
        lambda m: replace(m, params={**m.params, "intercept": -m.params["intercept"]}),
        lambda m: replace(m, version=m.version + 1),
        lambda m: replace(m, name="multivariate2"),
        lambda m: replace(m, n_features=3),
        lambda m: replace(m, trained_on={**m.trained_on, "count": 41}),
        lambda m: replace(m, train_score={**m.train_score, "r2": 0.99}),
        lambda m: replace(m, created_at=m.created_at + 1),
    ],
    ids=[
        "coefficient",
        "intercept",
        "version",
        "name",
        "n_features",
        "trained_on",
        "train_score",
        "created_at",
    ],
)
def test_any_change_after_signing_fails(tamper: Any) -> None:
    forged = tamper(sign(model(), KEY))
    with pytest.raises(MessageError) as info:
        verify(forged, KEY)
    assert str(info.value).startswith(
        f"model {forged.name!r} v{forged.version}: signature does not match: "
    )
    with pytest.raises(MessageError):
        verify(through_the_bus(forged), KEY)


def test_another_key_fails_and_unsigned_fails_when_a_key_is_set() -> None:
    with pytest.raises(MessageError, match="signature does not match"):
        verify(sign(model(), OTHER), KEY)
    with pytest.raises(MessageError) as info:
        verify(model(), KEY)
    assert str(info.value).startswith("model 'multivariate' v3: signature missing: ")
    with pytest.raises(MessageError, match="signature does not match"):
        verify(model(signature="not hex at all ünïcode"), KEY)


def test_the_signature_covers_what_readers_parse_not_how_it_was_written() -> None:
    signed = sign(model(), KEY)
    obj = json.loads(signed.to_bytes())
    reordered = json.dumps(dict(reversed(list(obj.items()))), indent=2, ensure_ascii=False)
    verify(ModelVersion.from_bytes(reordered.encode()), KEY)
    extended = {**obj, "added_later": [1, 2]}  # a field this reader does not know
    verify(ModelVersion.from_bytes(json.dumps(extended).encode()), KEY)
    # a writer's ints where readers see floats, and train_score fields readers drop
    writer = replace(model(), train_score={"r2": 1, "rmse": 0, "mae": 0, "mape": 0.5})
    verify(through_the_bus(sign(writer, KEY)), KEY)
    assert canonical_bytes(writer) == canonical_bytes(through_the_bus(writer))
    assert b" " not in canonical_bytes(writer) and b"signature" not in canonical_bytes(signed)


def test_bytes_keys_work_like_model_keys() -> None:
    signed = sign(model(), SECRET.encode())
    verify(signed, KEY)
    assert signed == sign(model(), KEY)


def test_a_short_or_missing_key_from_the_environment() -> None:
    assert model_key_from_env({}) is None
    assert model_key_from_env({KEY_VARIABLE: ""}) is None
    found = model_key_from_env({KEY_VARIABLE: SECRET})
    assert found is not None
    verify(sign(model(), found), KEY)
    with pytest.raises(ConfigError) as info:
        model_key_from_env({KEY_VARIABLE: "tooshort"})
    assert "tooshort" not in str(info.value)
    assert "at least 16" in str(info.value)


def test_the_scorers_loading_refuses_unsigned_and_forged_versions_when_a_key_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signed = sign(model(), KEY)
    assert load_model(signed, KEY).version == 3
    with pytest.raises(MessageError, match="signature missing"):
        load_model(model(), KEY)
    with pytest.raises(MessageError, match="signature does not match"):
        load_model(change_coefficient(signed), KEY)
    # the key comes from the environment by default
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    assert load_model(through_the_bus(signed)).name == "multivariate"
    with pytest.raises(MessageError, match="signature missing"):
        load_model(model())
    # without a key, signatures are ignored (and params still checked)
    monkeypatch.delenv(KEY_VARIABLE)
    assert load_model(model()).version == 3
    assert load_model(change_coefficient(signed)).version == 3
    assert load_model(signed, None).version == 3
    big = replace(model(), params={**model().params, "coef": [1e308, 1.0]})
    with pytest.raises(ModelError, match="beyond ±1e15"):
        load_model(big, None)


def test_the_key_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    signed = sign(model(), KEY)
    texts = [repr(KEY), str(KEY), f"{KEY}", f"{KEY!r}", repr(signed), str(signed)]
    texts += [repr(model_key_from_env({KEY_VARIABLE: SECRET}))]
    texts += [repr(load_model(signed, KEY)), signed.to_bytes().decode()]
    for bad in (model(), change_coefficient(signed), sign(model(), OTHER)):
        with pytest.raises(MessageError) as info:
            verify(bad, KEY)
        texts += [str(info.value), repr(info.value)]
    texts += [record.getMessage() for record in caplog.records]
    assert KEY.digest(b"") != OTHER.digest(b"")  # the key is in use, just never shown
    for text in texts:
        assert SECRET not in text
        assert SECRET.encode().hex() not in text
    assert repr(KEY) == "ModelKey(<hidden>)"
