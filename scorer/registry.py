"""The live models: the latest version of every model name, loaded from ``models``."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Literal

import numpy as np
import numpy.typing as npt

from bus.messages import ModelVersion
from bus.signing import ModelKey, model_key_from_env, verify
from regressors import Regressor, regressor_for
from regressors.base import MIN_POINTS_PER_PARAM

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class LiveModel:
    """One loaded model version, ready to predict."""

    name: str
    version: int
    kind: str
    n_features: int
    train_rmse: float | None
    regressor: Regressor
    trained_count: int | None = None  # ``trained_on.count``: points it was trained on

    @property
    def supported(self) -> bool:
        """False when it was trained on fewer than 2 points per coefficient (over-fitted).

        Unknown counts pass: the scores tell then.
        """
        count, n_params = self.trained_count, self.regressor.n_params
        return count is None or n_params is None or count >= MIN_POINTS_PER_PARAM * n_params

    @property
    def key(self) -> tuple[str, int]:
        """(name, version): what rolling scores are kept by."""
        return (self.name, self.version)

    def predict(self, rows: FloatArray) -> FloatArray:
        """Predictions for ``rows`` (n, n_features)."""
        return self.regressor.predict(rows)


class KeySource(Enum):
    """Where `load_model` finds the model key when it is not given one."""

    ENVIRONMENT = "STREAMSCORE_MODEL_KEY"


def load_model(
    message: ModelVersion,
    key: ModelKey | Literal[KeySource.ENVIRONMENT] | None = KeySource.ENVIRONMENT,
) -> LiveModel:
    """Check a model message (signature, params) and build the model.

    With a model key (``key``, by default read from ``STREAMSCORE_MODEL_KEY``) only
    versions signed with it load: an unsigned or forged one raises MessageError.
    Without a key, signatures are ignored. Params that do not validate (shape,
    coefficients beyond ±1e15) raise ModelError.
    """
    if key is KeySource.ENVIRONMENT:
        key = model_key_from_env()
    if key is not None:
        verify(message, key)
    regressor = regressor_for(
        message.params,
        kind=message.kind,
        n_features=message.n_features,
        where=f"model {message.name!r} v{message.version}",
    )
    return LiveModel(
        name=message.name,
        version=message.version,
        kind=message.kind,
        n_features=message.n_features,
        train_rmse=message.train_score.get("rmse"),
        regressor=regressor,
        trained_count=_count(message.trained_on.get("count")),
    )


def _count(value: object) -> int | None:
    """``trained_on.count`` when it is a count (the contract leaves it open)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class ModelRegistry:
    """Latest version per model name plus a short history; safe to read from any thread.

    Readers get immutable snapshots; the one writer (the models consumer) swaps
    them in whole, so a new version serves from the next batch on, with no pause.
    """

    def __init__(self, history: int = 10) -> None:
        self._history = history
        self._lock = threading.Lock()
        self._latest: Mapping[str, LiveModel] = MappingProxyType({})
        self._versions: Mapping[str, Mapping[int, LiveModel]] = MappingProxyType({})

    def add(self, model: LiveModel) -> bool:
        """Make ``model`` live if it is newer than what is there; True if it was."""
        with self._lock:
            current = self._latest.get(model.name)
            if current is not None and current.version >= model.version:
                return False
            latest = dict(self._latest)
            latest[model.name] = model
            versions = dict(self._versions)
            kept = dict(versions.get(model.name, {}))
            kept[model.version] = model
            for old in sorted(kept)[: -self._history]:
                del kept[old]
            versions[model.name] = MappingProxyType(kept)
            self._latest = MappingProxyType(latest)
            self._versions = MappingProxyType(versions)
            return True

    def remove(self, name: str) -> None:
        """Forget a model (its key was deleted from ``models``)."""
        with self._lock:
            self._latest = MappingProxyType({k: v for k, v in self._latest.items() if k != name})
            self._versions = MappingProxyType(
                {k: v for k, v in self._versions.items() if k != name}
            )

    def latest(self) -> Mapping[str, LiveModel]:
        """Name -> latest version, as an immutable snapshot."""
        return self._latest

    def get(self, name: str, version: int | None = None) -> LiveModel | None:
        """A model by name, its latest version or a recent given one."""
        if version is None:
            return self._latest.get(name)
        return self._versions.get(name, {}).get(version)
