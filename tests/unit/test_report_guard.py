"""A failing test is reported as a failure even when a finalizer logs while it is rendered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A test that fails while cyclic garbage keeps coming: each object, when collected,
# logs an error with its traceback (as a client closing a dead connection may) and
# leaves a new one behind, so a collection in the middle of the report's source
# parsing (a low threshold makes them frequent) runs such a finalizer.
FAILING = """
import gc
import logging

LEFT = [300]


class LogsWhenCollected:
    def __init__(self):
        self.me = self

    def __del__(self):
        if LEFT[0] > 0:
            LEFT[0] -= 1
            LogsWhenCollected()
        try:
            raise RuntimeError("connection lost")
        except RuntimeError:
            logging.getLogger("client").exception("closing")


def test_fails():
    gc.set_threshold(50)
    LogsWhenCollected()
    assert 1 == 2
"""


def run_pytest(tmp_path: Path, *plugins: str) -> subprocess.CompletedProcess[str]:
    """Run pytest on the failing test in its own process, with ``plugins`` loaded."""
    (tmp_path / "test_failing.py").write_text(FAILING)
    options = [arg for plugin in plugins for arg in ("-p", plugin)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the counter is per call from 3.12 on")
def test_without_the_guard_the_session_can_end_in_an_internal_error(tmp_path: Path) -> None:
    result = run_pytest(tmp_path)
    assert result.returncode == pytest.ExitCode.INTERNAL_ERROR, result.stdout
    assert "AST constructor recursion depth mismatch" in result.stdout


def test_with_the_guard_the_failure_is_reported(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, "tests.report_guard")
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert "1 failed" in result.stdout
    assert "assert 1 == 2" in result.stdout
