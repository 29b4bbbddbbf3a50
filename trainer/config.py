"""The trainer's settings, read from the environment once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bus.messages import MAX_FEATURES, MODEL_KINDS, MODEL_NAME_RULE, is_model_name
from core.errors import ConfigError
from core.settings import Setting, SettingsTable, boolean, integer, number, text

DEFAULT_MODELS = "multivariate,polynomial:3"

#: Default forgetting factor: an effective memory of 1 / (1 - 0.9995) = 2,000 points
#: per partition of ``points``.
DEFAULT_FORGET = 0.9995


@dataclass(frozen=True)
class Training:
    """How every regressor learns: a sliding window, exponential forgetting, or neither.

    ``window`` W keeps exactly the last W points; otherwise ``forget`` (a factor in
    (0, 1), None for cumulative) down-weights each point by the newer points of its
    partition, and ``detect`` makes every partition forget its past when the model's residuals drift
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
    try:
        return _models(text)
    except ValueError as exc:
        raise ConfigError(f"{setting}: {exc}") from None


def _models(text: str) -> tuple[ModelSpec, ...]:
    """`parse_models`, raising ValueError (the settings table names the setting)."""
    specs: list[ModelSpec] = []
    for raw in text.split(","):
        item = raw.strip()
        if item:
            spec = _model(item)
            if any(known.name == spec.name for known in specs):
                raise ValueError(
                    f"model name {spec.name!r} is used twice; name one of them, "
                    "e.g. 'cubic=polynomial:3'"
                )
            specs.append(spec)
    if not specs:
        raise ValueError(f"no model configured, e.g. {DEFAULT_MODELS!r}")
    return tuple(specs)


def _model(item: str) -> ModelSpec:
    """One ``[name=]kind[:degree]`` item."""
    name, _, body = item.rpartition("=")
    kind, _, degree_text = body.partition(":")
    kind = kind.strip()
    name = name.strip() or kind
    if kind not in MODEL_KINDS:
        raise ValueError(
            f"{item!r}: unknown kind {kind!r}; expected one of "
            f"{', '.join(MODEL_KINDS)}, e.g. 'multivariate,polynomial:3'"
        )
    degree: int | None = None
    if kind == "polynomial":
        try:
            degree = int(degree_text) if degree_text.strip() else 3
        except ValueError:
            raise ValueError(f"{item!r}: degree {degree_text!r} is not an integer") from None
        if not 1 <= degree <= 10:
            raise ValueError(f"{item!r}: degree must be 1 to 10, got {degree}")
    elif degree_text:
        raise ValueError(f"{item!r}: only 'polynomial' takes a degree")
    if not is_model_name(name):
        raise ValueError(f"{item!r}: model name {name!r} must be {MODEL_NAME_RULE}")
    return ModelSpec(name, kind, degree)


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

    def __post_init__(self) -> None:
        SETTINGS.check(self)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None
    ) -> TrainerConfig:
        """Read ``STREAMSCORE_TRAINER_*`` (``overrides``: field -> text on top)."""
        return SETTINGS.load(env, overrides)

    def check(self) -> None:
        """Raise ConfigError when a value cannot be used (done at every construction)."""
        SETTINGS.check(self)

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


def _describe_models(specs: tuple[ModelSpec, ...]) -> str:
    return ",".join(spec.describe() for spec in specs)


_ID = text(nonempty=True, without="#")

#: The settings, in the order ``--help`` and the README list them.
SETTINGS = SettingsTable(
    TrainerConfig,
    "STREAMSCORE_TRAINER_",
    [
        Setting("models", "STREAMSCORE_TRAINER_MODELS", _models, "models to fit: "
                "[name=]kind[:degree],... e.g. multivariate,polynomial:3", "SPECS",
                format=_describe_models),
        Setting("publish_every", "STREAMSCORE_TRAINER_PUBLISH_EVERY", integer(minimum=1),
                "publish new versions after this many new labelled points", "N"),
        Setting("publish_interval_s", "STREAMSCORE_TRAINER_PUBLISH_INTERVAL_S",
                number(minimum=0.01), "or after this many seconds with new data", "SECONDS",
                aliases=("--publish-interval",)),
        Setting("window", "STREAMSCORE_TRAINER_WINDOW", integer(minimum=0),
                "sliding window in points (0: forgetting, see --forget)", "N"),
        Setting("forget", "STREAMSCORE_TRAINER_FORGET", number(minimum=0.5, maximum=1.0),
                "forgetting factor per newer point of a partition (1: cumulative; 0.9995: a "
                "memory of 2000 points)", "FACTOR"),
        Setting("drift", "STREAMSCORE_TRAINER_DRIFT", boolean(),
                "forget a partition's past at once when its residuals drift"),
        Setting("n_features", "STREAMSCORE_TRAINER_N_FEATURES",
                integer(minimum=0, maximum=MAX_FEATURES),
                "the stream's dimension (0: learnt from the first labelled point)", "N"),
        Setting("group_id", "STREAMSCORE_TRAINER_GROUP", _ID,
                "consumer group, and the key of its checkpoints", "GROUP"),
        Setting("transactional_id", "STREAMSCORE_TRAINER_TRANSACTIONAL_ID", _ID,
                "transactional id (a new trainer fences an old one)", "ID"),
        Setting("max_records", "STREAMSCORE_TRAINER_MAX_RECORDS", integer(minimum=1),
                "records per batch", "N"),
        Setting("workers", "STREAMSCORE_TRAINER_WORKERS", integer(minimum=0),
                "processes that decode and validate batches (0: the loop's own thread)", "N"),
        Setting("fast_fetch", "STREAMSCORE_TRAINER_FAST_FETCH", boolean(),
                "accepted for compatibility, no effect"),
    ],
    in_code=("poll_timeout_ms", "max_pending_deadletters"),
)  # fmt: skip
