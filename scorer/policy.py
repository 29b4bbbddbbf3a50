"""Which model serves the predictions: a fixed name, or the best by rolling RMSE."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from scorer.quality import Scoreboard
from scorer.registry import LiveModel

log = logging.getLogger(__name__)

BEST = "best"


class ServingPolicy:
    """Chooses the serving model name; its latest version always serves.

    ``best`` keeps the current champion until a challenger's rolling RMSE is lower
    by more than ``hysteresis`` (a fraction), both measured on at least
    ``min_scored`` labelled points, so the choice does not flap. Every name is
    measured on the same last labelled points (`scorer.quality.Scoreboard.standing`;
    a new name is scored on them as it arrives), so identical models never switch
    and a clearly better new model serves at once. Before any model
    is scored, the lowest training RMSE wins among the models trained on at least
    2 points per coefficient (`LiveModel.supported`; an over-fitted model's training
    RMSE says nothing), the others only when none is. Any other policy is a model name:
    while that model does not exist, nothing serves and the scorer holds.
    """

    def __init__(self, policy: str = BEST, hysteresis: float = 0.05, min_scored: int = 100) -> None:
        self.policy = policy
        self._hysteresis = hysteresis
        self._min_scored = min_scored
        self.champion: str | None = None

    def serving(self, live: Mapping[str, LiveModel]) -> LiveModel | None:
        """The model that answers now, or None to hold."""
        name = self.policy if self.policy != BEST else self.champion
        if name is not None and name in live:
            return live[name]
        if self.policy != BEST or not live:
            return None
        self.champion = min(live.values(), key=_by_train_rmse).name
        log.info("serving model: %s (lowest training RMSE)", self.champion)
        return live[self.champion]

    def review(self, live: Mapping[str, LiveModel], board: Scoreboard) -> None:
        """Reconsider the champion after new scores (``best`` only)."""
        if self.policy != BEST:
            return
        champion = self.serving(live)
        if champion is None:
            return
        count, champion_rmse = board.standing(champion)
        if count < self._min_scored or champion_rmse is None:
            return
        best: tuple[float, str] | None = None
        for model in live.values():
            n, rmse = board.standing(model)
            if model.name != champion.name and n >= self._min_scored and rmse is not None:
                best = min(best, (rmse, model.name)) if best else (rmse, model.name)
        if best is not None and best[0] < champion_rmse * (1.0 - self._hysteresis):
            log.info(
                "serving model: %s (rolling RMSE %.4g beats %s at %.4g)",
                best[1],
                best[0],
                champion.name,
                champion_rmse,
            )
            self.champion = best[1]


def _by_train_rmse(model: LiveModel) -> tuple[bool, float, str]:
    rmse = model.train_rmse
    known = rmse if rmse is not None and math.isfinite(rmse) else math.inf
    return (not model.supported, known, model.name)
