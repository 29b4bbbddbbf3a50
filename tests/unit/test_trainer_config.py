"""The trainer's settings: defaults, environment variables, the models list."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from trainer.config import ModelSpec, TrainerConfig, parse_models


def test_defaults() -> None:
    config = TrainerConfig.from_env({})
    assert config.group_id == "streamscore-trainer"
    assert config.transactional_id == "streamscore-trainer"
    assert config.models == (
        ModelSpec("multivariate", "multivariate"),
        ModelSpec("polynomial", "polynomial", 3),
    )
    assert (config.publish_every, config.publish_interval_s) == (1000, 10.0)
    assert config.window_or_none is None
    assert config.n_features_or_none is None
    assert config.max_records == 5000


def test_environment() -> None:
    config = TrainerConfig.from_env(
        {
            "STREAMSCORE_TRAINER_GROUP": "g",
            "STREAMSCORE_TRAINER_TRANSACTIONAL_ID": "t",
            "STREAMSCORE_TRAINER_MODELS": "multivariate, quad=polynomial:2",
            "STREAMSCORE_TRAINER_PUBLISH_EVERY": "50",
            "STREAMSCORE_TRAINER_PUBLISH_INTERVAL_S": "0.5",
            "STREAMSCORE_TRAINER_WINDOW": "2000",
            "STREAMSCORE_TRAINER_N_FEATURES": "4",
            "STREAMSCORE_TRAINER_MAX_RECORDS": "100",
            "STREAMSCORE_TRAINER_FAST_FETCH": "false",
        }
    )
    assert (config.group_id, config.transactional_id) == ("g", "t")
    assert config.models == (
        ModelSpec("multivariate", "multivariate"),
        ModelSpec("quad", "polynomial", 2),
    )
    assert (config.publish_every, config.publish_interval_s) == (50, 0.5)
    assert (config.window_or_none, config.n_features_or_none, config.max_records) == (2000, 4, 100)
    assert config.fast_fetch is False


def test_models_syntax() -> None:
    specs = parse_models("polynomial,cubic=polynomial:3,multivariate")
    assert specs == (
        ModelSpec("polynomial", "polynomial", 3),
        ModelSpec("cubic", "polynomial", 3),
        ModelSpec("multivariate", "multivariate"),
    )
    assert [s.describe() for s in specs] == ["polynomial:3", "cubic=polynomial:3", "multivariate"]
    assert specs[1].options(10) == {"window": 10, "degree": 3}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no model"),
        ("linear", "unknown kind"),
        ("polynomial:x", "not an integer"),
        ("polynomial:11", "1 to 10"),
        ("multivariate:2", "only 'polynomial'"),
        ("polynomial:2,polynomial:3", "used twice"),
        ("bad name=multivariate", "model name"),
    ],
)
def test_bad_models_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_models(text)


@pytest.mark.parametrize(
    "env",
    [
        {"STREAMSCORE_TRAINER_PUBLISH_EVERY": "0"},
        {"STREAMSCORE_TRAINER_WINDOW": "-1"},
        {"STREAMSCORE_TRAINER_N_FEATURES": "100000"},
        {"STREAMSCORE_TRAINER_GROUP": "a#b"},
    ],
)
def test_bad_values(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        TrainerConfig.from_env(env)
