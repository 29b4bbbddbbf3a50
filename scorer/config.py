"""The scorer's settings, read from the environment once."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from core.env import env_choice, env_float, env_int, env_str

DELIVERY_MODES = ("at-least-once", "exactly-once")


@dataclass(frozen=True)
class ScorerConfig:
    """How the scorer consumes, which model serves, and how often scores are published."""

    group_id: str = "streamscore-scorer"
    requests_group_id: str = "streamscore-scorer-requests"
    delivery: str = "at-least-once"
    transactional_id: str = "streamscore-scorer"
    policy: str = "best"
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ScorerConfig:
        """Read ``STREAMSCORE_SCORER_*``; see the README's settings table."""
        env = os.environ if env is None else env
        return cls(
            group_id=env_str(env, "STREAMSCORE_SCORER_GROUP", cls.group_id),
            requests_group_id=env_str(
                env, "STREAMSCORE_SCORER_REQUESTS_GROUP", cls.requests_group_id
            ),
            delivery=env_choice(env, "STREAMSCORE_SCORER_DELIVERY", cls.delivery, DELIVERY_MODES),
            transactional_id=env_str(
                env,
                "STREAMSCORE_SCORER_TRANSACTIONAL_ID",
                f"streamscore-scorer-{socket.gethostname()}",
            ),
            policy=env_str(env, "STREAMSCORE_SCORER_POLICY", cls.policy),
            window=env_int(env, "STREAMSCORE_SCORER_WINDOW", cls.window, minimum=1),
            scores_every=env_int(
                env, "STREAMSCORE_SCORER_SCORES_EVERY", cls.scores_every, minimum=1
            ),
            scores_interval_s=env_float(
                env, "STREAMSCORE_SCORER_SCORES_INTERVAL_S", cls.scores_interval_s, minimum=0.01
            ),
            hysteresis=env_float(env, "STREAMSCORE_SCORER_HYSTERESIS", cls.hysteresis, minimum=0.0),
            min_scored=env_int(env, "STREAMSCORE_SCORER_MIN_SCORED", cls.min_scored, minimum=1),
            max_batch=env_int(env, "STREAMSCORE_SCORER_MAX_BATCH", cls.max_batch, minimum=1),
            request_max_age_s=env_float(
                env, "STREAMSCORE_SCORER_REQUEST_MAX_AGE_S", cls.request_max_age_s, minimum=1.0
            ),
        )

    @property
    def exactly_once(self) -> bool:
        """True when predictions and offsets are written in one Kafka transaction."""
        return self.delivery == "exactly-once"
