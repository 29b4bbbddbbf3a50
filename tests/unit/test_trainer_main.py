"""``streamscore trainer``'s entry point: a stop that hangs still ends the process."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from trainer.__main__ import build_parser, main
from trainer.config import SETTINGS, TrainerConfig

SCRIPT = """
import logging, time
from core.shutdown import StopFlag
from trainer.__main__ import _exit_if_stuck
logging.basicConfig(level=logging.INFO)
stop = StopFlag()
_exit_if_stuck(stop, 0.3)
stop.set()
time.sleep(30)  # a call that does not return
"""


def test_a_stop_that_hangs_ends_the_process_after_the_grace_period() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, timeout=20, check=False
    )
    assert time.monotonic() - started < 10
    assert done.returncode == 1
    assert b"still stopping 0.3s after the signal" in done.stderr
    assert b"resumes from the last checkpoint" in done.stderr


def test_a_bad_flag_is_refused_like_its_variable_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--window", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--window / STREAMSCORE_TRAINER_WINDOW = '-1': expected an integer" in err
    assert main(["--models", "linear"]) == 2
    err = capsys.readouterr().err
    assert "--models / STREAMSCORE_TRAINER_MODELS = 'linear'" in err
    assert "unknown kind 'linear'" in err
    assert main(["--forget", "0.1"]) == 2
    assert "from 0.5 to 1.0" in capsys.readouterr().err


def test_every_setting_has_a_flag_named_after_its_variable() -> None:
    config = TrainerConfig.from_env(
        {"STREAMSCORE_TRAINER_WINDOW": "7"},
        SETTINGS.overrides(
            build_parser().parse_args(
                ["--publish-interval-s", "0.5", "--forget", "1", "--no-drift", "--group", "g"]
            )
        ),
    )
    assert (config.window, config.publish_interval_s, config.forget) == (7, 0.5, 1.0)
    assert (config.drift, config.group_id) == (False, "g")
    old = build_parser().parse_args(["--publish-interval", "2"])  # the older spelling
    assert TrainerConfig.from_env({}, SETTINGS.overrides(old)).publish_interval_s == 2.0
