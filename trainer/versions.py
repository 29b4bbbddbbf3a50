"""The ``models`` value of a new version: built, signed and checked as a reader would.

A version the contract refuses (coefficients out of range, say) is not published;
the error is logged once per model until a version passes again. A model whose
fit rests on too few points for its size (`trainer.models.ModelSlot.ready`) gets
no version; that too is said once.
"""

from __future__ import annotations

import logging
from typing import Literal, cast

from bus.messages import ModelVersion
from bus.signing import ModelKey, sign
from core.errors import MessageError
from regressors.base import MIN_POINTS_PER_PARAM
from trainer.models import ModelSlot

log = logging.getLogger("trainer.step")


class VersionWriter:
    """Encodes new versions of the trainer's models (signed with ``key`` if given)."""

    def __init__(self, key: ModelKey | None, window: int | None) -> None:
        self._key = key
        self._window = window
        self._refused: set[str] = set()  # models whose versions the contract refuses
        self._held: set[str] = set()  # models too small a fit holds back (said once)

    def ready(self, slot: ModelSlot) -> bool:
        """True when ``slot`` is worth a version; else say why, once."""
        name = slot.spec.name
        if slot.ready:
            self._held.discard(name)
            return True
        regressor = slot.regressor
        if name not in self._held and regressor.is_fitted:
            self._held.add(name)
            log.info(
                "model %r: no version until its fit rests on %d points (%d per coefficient; "
                "%.0f so far)",
                name,
                MIN_POINTS_PER_PARAM * (regressor.n_params or 0),
                MIN_POINTS_PER_PARAM,
                regressor.effective_points,
            )
        return False

    def encode(
        self,
        slot: ModelSlot,
        version: int,
        offsets: dict[str, int],
        created_at: int,
        new_points: int,
    ) -> bytes | None:
        """The ``models`` value of a new version, or None when the contract refuses it."""
        regressor = slot.regressor
        name = slot.spec.name
        message = ModelVersion(
            name=name,
            version=version,
            kind=cast(Literal["multivariate", "polynomial"], regressor.kind),
            n_features=int(regressor.n_features or 0),
            params=regressor.to_dict(),
            trained_on={
                "count": regressor.n_seen,
                "offsets": offsets,
                "window": self._window,
                "forget": regressor.forget,
                "drifts": regressor.drifts,
                "new": new_points,
            },
            train_score=slot.take_score(),
            created_at=created_at,
        )
        try:
            if self._key is not None:
                message = sign(message, self._key)  # checks it as a reader would
            value = message.to_bytes()
            ModelVersion.from_bytes(value)  # what every scorer will check
        except (MessageError, ValueError) as exc:
            if name not in self._refused:
                log.error(
                    "model %r: version %d not published, the contract refuses it: %s; "
                    "scale the features or the labels",
                    name,
                    version,
                    exc,
                )
            self._refused.add(name)
            return None
        self._refused.discard(name)
        return value
