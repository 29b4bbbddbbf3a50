"""The trainer's settings, read from the environment once."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bus.messages import MAX_FEATURES, MAX_NAME_CHARS, MODEL_KINDS
from core.env import env_bool, env_float, env_int, env_str
from core.errors import ConfigError

DEFAULT_MODELS = "multivariate,polynomial:3"

#: Default forgetting factor: an effective memory of 1 / (1 - 0.9995) = 2,000 points
#: per partition of ``points``.
DEFAULT_FORGET = 0.9995


@dataclass(frozen=True)
class Training:
    """How every regressor learns: a sliding window, exponential forgetting, or neither.

    ``window`` W keeps exactly the last W points; otherwise ``forget`` (a factor in
    (0, 1), None for cumulative) down-weights each point by the newer points of its
    partition, and ``detect`` resets a partition's memory when its residuals drift
    (`regressors.forgetting`).
    """

    window: int | None = None
    forget: float | None = None
    detect: bool = False

    def options(self) -> dict[str, Any]:
        """Keyword arguments of the regressors' constructors."""
        if self.window is not None:
            return {"window": self.window}
        if self.forget is None:
            return {"window": None}
        return {"window": None, "forget": self.forget, "detect": self.detect}

    def describe(self) -> str:
        """``window 1500``, ``cumulative``, or ``forgetting 0.9995 (memory 2000 points)...``."""
        if self.window is not None:
            return f"window {self.window}"
        if self.forget is None:
            return "cumulative"
        memory = f"forgetting {self.forget:g} (memory {1.0 / (1.0 - self.forget):.0f} points)"
        return f"{memory}, drift detection" if self.detect else memory


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelSpec:
    """One regressor the trainer fits: its name on ``models``, its kind and its degree."""

    name: str
    kind: str
    degree: int | None = None

    def options(self, training: Training | int | None) -> dict[str, Any]:
        """Keyword arguments of ``regressors.make_regressor(kind, **options)``.

        ``training`` is a `Training`, or a window (None: cumulative).
        """
        if not isinstance(training, Training):
            training = Training(window=training)
        options = training.options()
        if self.degree is not None:
            options["degree"] = self.degree
        return options

    def describe(self) -> str:
        """``name=kind[:degree]``, as written in the setting."""
        kind = self.kind if self.degree is None else f"{self.kind}:{self.degree}"
        return kind if self.name == self.kind else f"{self.name}={kind}"


def parse_models(
    text: str, *, setting: str = "STREAMSCORE_TRAINER_MODELS"
) -> tuple[ModelSpec, ...]:
    """Parse ``multivariate,polynomial:3,cubic=polynomial:3`` into model specs.

    Each item is ``[name=]kind[:degree]``; the name defaults to the kind. ``degree``
    is for ``polynomial`` only (default 3). Names must be unique.
    """
    specs: list[ModelSpec] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, _, body = item.rpartition("=")
        kind, _, degree_text = body.partition(":")
        kind = kind.strip()
        name = name.strip() or kind
        if kind not in MODEL_KINDS:
            raise ConfigError(
                f"{setting}: {item!r}: unknown kind {kind!r}; expected one of "
                f"{', '.join(MODEL_KINDS)}, e.g. 'multivariate,polynomial:3'"
            )
        degree: int | None = None
        if kind == "polynomial":
            try:
                degree = int(degree_text) if degree_text.strip() else 3
            except ValueError:
                raise ConfigError(
                    f"{setting}: {item!r}: degree {degree_text!r} is not an integer"
                ) from None
            if not 1 <= degree <= 10:
                raise ConfigError(f"{setting}: {item!r}: degree must be 1 to 10, got {degree}")
        elif degree_text:
            raise ConfigError(f"{setting}: {item!r}: only 'polynomial' takes a degree")
        if not _NAME.match(name) or len(name) > MAX_NAME_CHARS:
            raise ConfigError(
                f"{setting}: {item!r}: model name {name!r} must be 1 to {MAX_NAME_CHARS} "
                "letters, digits, '.', '_' or '-'"
            )
        if any(spec.name == name for spec in specs):
            raise ConfigError(
                f"{setting}: model name {name!r} is used twice; name one of them, "
                f"e.g. 'cubic=polynomial:3'"
            )
        specs.append(ModelSpec(name, kind, degree))
    if not specs:
        raise ConfigError(f"{setting}: no model configured, e.g. {DEFAULT_MODELS!r}")
    return tuple(specs)


@dataclass(frozen=True)
class TrainerConfig:
    """What the trainer fits, when it publishes, and how it reads ``points``.

    ``window`` W > 0 fits the last W labelled points; with ``window`` 0 each point
    weighs ``forget`` less per newer point of its partition (1: cumulative, every
    point since the start alike), and with ``drift`` a partition whose residuals
    drift forgets its past at once (see `Training`). ``n_features`` 0 means: learned
    from the first valid labelled point. ``workers`` processes decode and validate
    chunks (0: the loop's own thread does).
    """

    group_id: str = "streamscore-trainer"
    transactional_id: str = "streamscore-trainer"
    models: tuple[ModelSpec, ...] = parse_models(DEFAULT_MODELS)
    publish_every: int = 1000
    publish_interval_s: float = 10.0
    window: int = 0
    forget: float = DEFAULT_FORGET
    drift: bool = True
    n_features: int = 0
    max_records: int = 5000
    workers: int = 2
    poll_timeout_ms: int = 200
    fast_fetch: bool = True
    max_pending_deadletters: int = 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrainerConfig:
        """Read ``STREAMSCORE_TRAINER_*``; see the README's settings table."""
        env = os.environ if env is None else env
        config = cls(
            group_id=env_str(env, "STREAMSCORE_TRAINER_GROUP", cls.group_id),
            transactional_id=env_str(
                env, "STREAMSCORE_TRAINER_TRANSACTIONAL_ID", cls.transactional_id
            ),
            models=parse_models(env_str(env, "STREAMSCORE_TRAINER_MODELS", DEFAULT_MODELS)),
            publish_every=env_int(
                env, "STREAMSCORE_TRAINER_PUBLISH_EVERY", cls.publish_every, minimum=1
            ),
            publish_interval_s=env_float(
                env,
                "STREAMSCORE_TRAINER_PUBLISH_INTERVAL_S",
                cls.publish_interval_s,
                minimum=0.01,
            ),
            window=env_int(env, "STREAMSCORE_TRAINER_WINDOW", cls.window, minimum=0),
            forget=env_float(env, "STREAMSCORE_TRAINER_FORGET", cls.forget, minimum=0.5),
            drift=env_bool(env, "STREAMSCORE_TRAINER_DRIFT", cls.drift),
            n_features=env_int(env, "STREAMSCORE_TRAINER_N_FEATURES", cls.n_features, minimum=0),
            max_records=env_int(env, "STREAMSCORE_TRAINER_MAX_RECORDS", cls.max_records, minimum=1),
            workers=env_int(env, "STREAMSCORE_TRAINER_WORKERS", cls.workers, minimum=0),
            fast_fetch=env_bool(env, "STREAMSCORE_TRAINER_FAST_FETCH", cls.fast_fetch),
        )
        config.check()
        return config

    def check(self) -> None:
        """Raise ConfigError when a value cannot be used (also after CLI overrides)."""
        if self.n_features > MAX_FEATURES:
            raise ConfigError(
                f"STREAMSCORE_TRAINER_N_FEATURES={self.n_features}: at most {MAX_FEATURES}"
            )
        for name, value in (
            ("GROUP", self.group_id),
            ("TRANSACTIONAL_ID", self.transactional_id),
        ):
            if not value or "#" in value:
                raise ConfigError(
                    f"STREAMSCORE_TRAINER_{name}={value!r}: must be non-empty, without '#'"
                )
        if not 0.5 <= self.forget <= 1.0:
            raise ConfigError(
                f"STREAMSCORE_TRAINER_FORGET={self.forget}: expected a factor from 0.5 to 1 "
                "(1: no forgetting; 0.9995: a memory of 2000 points per partition)"
            )
        if self.publish_every < 1 or self.max_records < 1 or self.window < 0:
            raise ConfigError("publish_every and max_records must be at least 1, window at least 0")

    @property
    def window_or_none(self) -> int | None:
        """The sliding window in points, or None for cumulative training."""
        return self.window or None

    @property
    def training(self) -> Training:
        """How the regressors learn: the window if set, else forgetting (1: cumulative)."""
        if self.window:
            return Training(window=self.window)
        if self.forget >= 1.0:
            return Training()
        return Training(forget=self.forget, detect=self.drift)

    @property
    def n_features_or_none(self) -> int | None:
        """The configured dimension of the stream, or None to learn it."""
        return self.n_features or None
