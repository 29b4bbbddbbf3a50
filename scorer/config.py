"""The scorer's settings: a frozen dataclass read from ``STREAMSCORE_SCORER_*``."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from bus.messages import MODEL_NAME_RULE, is_model_name
from core.settings import Setting, SettingsTable, boolean, choice, integer, number, text
from scorer.policy import BEST

DELIVERY_MODES = ("at-least-once", "exactly-once")


def default_transactional_id() -> str:
    """``streamscore-scorer-<hostname>``: one per scorer, stable across its restarts."""
    return f"streamscore-scorer-{socket.gethostname()}"


@dataclass(frozen=True)
class ScorerConfig:
    """How the scorer consumes, which model serves, and how often scores are published."""

    group_id: str = "streamscore-scorer"
    requests_group_id: str = "streamscore-scorer-requests"
    delivery: str = "at-least-once"
    transactional_id: str = field(default_factory=default_transactional_id)
    policy: str = BEST
    window: int = 1000
    scores_every: int = 1000
    scores_interval_s: float = 5.0
    hysteresis: float = 0.05
    min_scored: int = 100
    max_batch: int = 5000
    poll_timeout_ms: int = 100
    model_poll_interval_s: float = 0.05
    model_history: int = 10
    request_max_age_s: float = 60.0
    recalibrate: bool = True

    def __post_init__(self) -> None:
        SETTINGS.check(self)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None
    ) -> ScorerConfig:
        """Read ``STREAMSCORE_SCORER_*`` (``overrides``: field -> text on top)."""
        return SETTINGS.load(env, overrides)

    @property
    def exactly_once(self) -> bool:
        """True when predictions and offsets are written in one Kafka transaction."""
        return self.delivery == "exactly-once"


def _policy(value: str) -> str:
    if value == BEST or is_model_name(value):
        return value
    raise ValueError(
        f"expected {BEST} (the lowest rolling RMSE serves) or the name of a model: "
        f"{MODEL_NAME_RULE}, e.g. polynomial"
    )


_ID = text(nonempty=True)

#: The settings, in the order ``--help`` and the README list them.
SETTINGS = SettingsTable(
    ScorerConfig,
    "STREAMSCORE_SCORER_",
    [
        Setting("delivery", "STREAMSCORE_SCORER_DELIVERY", choice(*DELIVERY_MODES),
                "delivery guarantee (exactly-once: Kafka transactions)", "MODE"),
        Setting("policy", "STREAMSCORE_SCORER_POLICY", _policy, "which model serves: best "
                "(lowest rolling RMSE, with hysteresis) or a model name", "NAME"),
        Setting("window", "STREAMSCORE_SCORER_WINDOW", integer(minimum=1),
                "rolling score window, in labelled points", "N"),
        Setting("scores_every", "STREAMSCORE_SCORER_SCORES_EVERY", integer(minimum=1),
                "publish scores every N labelled points (at most once a batch)", "N"),
        Setting("scores_interval_s", "STREAMSCORE_SCORER_SCORES_INTERVAL_S",
                number(minimum=0.01), "or every this many seconds", "SECONDS"),
        Setting("hysteresis", "STREAMSCORE_SCORER_HYSTERESIS", number(minimum=0.0, maximum=1.0),
                "a challenger must beat the champion's RMSE by this fraction", "SHARE"),
        Setting("min_scored", "STREAMSCORE_SCORER_MIN_SCORED", integer(minimum=1),
                "labelled points a model needs before the policy compares it", "N"),
        Setting("recalibrate", "STREAMSCORE_SCORER_RECALIBRATE", boolean(),
                "when the serving version's residuals jump, serve a + b * its output fitted "
                "on the labelled points since, until another version serves", "BOOL"),
        Setting("max_batch", "STREAMSCORE_SCORER_MAX_BATCH", integer(minimum=1),
                "records per batch", "N"),
        Setting("model_history", "STREAMSCORE_MODEL_HISTORY", integer(minimum=1),
                "versions of each model kept loaded (set it as the gateway's)", "N"),
        Setting("group_id", "STREAMSCORE_SCORER_GROUP", _ID, "consumer group on points",
                "GROUP"),
        Setting("requests_group_id", "STREAMSCORE_SCORER_REQUESTS_GROUP", _ID,
                "consumer group on requests", "GROUP"),
        Setting("transactional_id", "STREAMSCORE_SCORER_TRANSACTIONAL_ID", _ID,
                "exactly-once: one per scorer, stable across its restarts", "ID",
                shown="streamscore-scorer-<hostname>"),
        Setting("request_max_age_s", "STREAMSCORE_SCORER_REQUEST_MAX_AGE_S",
                number(minimum=1.0), "gateway requests older than this are skipped (their "
                "caller stopped waiting)", "SECONDS"),
    ],
    in_code=("poll_timeout_ms", "model_poll_interval_s"),
)  # fmt: skip
