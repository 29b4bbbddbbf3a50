"""Signing model versions, so that scorers load only the models their trainer published.

Optional: with a key shared by the trainer and the scorers (``STREAMSCORE_MODEL_KEY``),
the trainer signs every version it writes to ``models`` (`sign`) and a scorer loads
only versions whose signature matches (`verify`); a version written by anyone else,
or changed on the way, is refused. Without a key nothing is signed and signatures
are ignored. The key is held in a `ModelKey`, which never shows it (repr, str, errors
and logs hold no trace of it).

The signature is the lowercase hex HMAC-SHA256 of the canonical form of the message,
carried in its optional ``signature`` field (readers that do not know the field
ignore it, as the contract says of unknown fields). The canonical form is the
``models`` value as a reader parses it (`ModelVersion.from_bytes`: the contract's
fields only, ``train_score`` reduced to r2, rmse and mae as floats or null), without
``signature``, written as JSON with the keys sorted at every level, no whitespace
(separators ``,`` and ``:``), non-ASCII characters as ``\\uXXXX`` escapes and numbers
as Python's ``json`` writes them. Fields outside the contract are not signed (no
reader uses them).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import replace

from bus.messages import ModelVersion
from core.errors import ConfigError, MessageError

#: The environment variable holding the shared key.
KEY_VARIABLE = "STREAMSCORE_MODEL_KEY"
#: Shortest key accepted, in bytes of its UTF-8 text.
MIN_KEY_BYTES = 16


class ModelKey:
    """The shared secret of model signatures; it never shows itself."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_KEY_BYTES:
            raise ConfigError(
                f"the model key is {len(secret)} bytes long; use at least {MIN_KEY_BYTES} "
                f"random bytes in {KEY_VARIABLE} (e.g. the output of `openssl rand -hex 32`)"
            )
        self._secret = secret

    def __repr__(self) -> str:
        return "ModelKey(<hidden>)"

    __str__ = __repr__

    def digest(self, data: bytes) -> str:
        """The lowercase hex HMAC-SHA256 of ``data``."""
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()


def model_key_from_env(environ: Mapping[str, str] | None = None) -> ModelKey | None:
    """The key in ``STREAMSCORE_MODEL_KEY``, or None when it is unset or empty."""
    text = (os.environ if environ is None else environ).get(KEY_VARIABLE, "")
    return ModelKey(text.encode()) if text else None


def canonical_bytes(model: ModelVersion) -> bytes:
    """The bytes a signature covers: the message as a reader parses it, without signature."""
    parsed = ModelVersion.from_bytes(replace(model, signature=None).to_bytes())
    return json.dumps(
        parsed.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def sign(model: ModelVersion, key: ModelKey | bytes) -> ModelVersion:
    """``model`` with its signature (MessageError if it breaks the contract)."""
    return replace(model, signature=_as_key(key).digest(canonical_bytes(model)))


def verify(model: ModelVersion, key: ModelKey | bytes) -> None:
    """Raise MessageError unless ``model`` carries the signature ``key`` gives it."""
    where = f"model {model.name!r} v{model.version}"
    if model.signature is None:
        raise MessageError(
            f"{where}: signature missing: this reader has a model key and loads only signed "
            f"versions; give the trainer the same {KEY_VARIABLE}"
        )
    expected = _as_key(key).digest(canonical_bytes(model))
    if not hmac.compare_digest(expected.encode(), model.signature.encode("utf-8", "replace")):
        raise MessageError(
            f"{where}: signature does not match: the version was changed after it was signed, "
            f"or signed with another key; check that the trainer and this reader share "
            f"{KEY_VARIABLE}"
        )


def _as_key(key: ModelKey | bytes) -> ModelKey:
    return key if isinstance(key, ModelKey) else ModelKey(key)
