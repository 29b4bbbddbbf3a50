"""``streamscore trainer``'s entry point: a stop that hangs still ends the process."""

from __future__ import annotations

import subprocess
import sys
import time

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
