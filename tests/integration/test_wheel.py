"""The built wheel installs into a fresh virtualenv and runs the demo from an empty folder.

Nothing of the checkout is on the path there: the broker's files come from the
installed package, its state goes to ``STREAMSCORE_HOME`` in the empty folder,
and it listens on free ports. Only the jar cache is shared with the checkout's
broker, so Maven does not fetch Kafka again. The dependencies come from the
registry (pip's cache makes later runs quick).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

from streamscore.broker import PROJECT_ROOT, BrokerConfig, LocalBroker, free_port_range

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (os.environ.get("JAVA_HOME") or shutil.which("java")),
        reason="the demo's local broker needs Java",
    ),
    pytest.mark.timeout(600),
]


def build_wheel(out: Path) -> Path:
    """``pip wheel`` of the checkout, without its dependencies; the wheel's path."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(out),
            str(PROJECT_ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("streamscore-*.whl")
    return wheel


def fresh_venv(path: Path, wheel: Path) -> Path:
    """A new virtualenv with ``wheel`` installed; its bin folder."""
    venv.create(path, with_pip=True)
    bin_dir = path / "bin"
    result = subprocess.run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return bin_dir


def outside_env(home: Path, port: int) -> dict[str, str]:
    """The environment of a user outside the checkout, with a home and ports of its own."""
    dropped = ("KAFKA_BOOTSTRAP_SERVERS", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    env = {
        k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("STREAMSCORE_")
    }
    env.update(
        STREAMSCORE_HOME=str(home),
        STREAMSCORE_CACHE=str(BrokerConfig.from_env().cache_dir),
        STREAMSCORE_KAFKA_PORT=str(port),
        STREAMSCORE_KAFKA_CONTROLLER_PORT=str(port + 1),
        STREAMSCORE_KAFKA_HEAP="512m",
        STREAMSCORE_DEMO_DRIFT_AFTER="2000",
        STREAMSCORE_DEMO_PUBLISH_EVERY="1000",
    )
    return env


def test_the_wheel_installs_and_runs_the_demo_from_an_empty_folder(tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "venv", build_wheel(tmp_path / "dist"))
    workdir = tmp_path / "empty"
    workdir.mkdir()
    home = workdir / ".streamscore"
    env = outside_env(home, free_port_range(2))

    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import streamscore; print(streamscore.__file__)"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv"), where.stdout
    version = subprocess.run(
        [str(bin_dir / "streamscore"), "--version"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert version.stdout.strip() == f"streamscore {project['version']}"
    try:
        demo = subprocess.run(
            [str(bin_dir / "streamscore"), "demo", "--points", "4000", "--rate", "4000"],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
    finally:
        LocalBroker(BrokerConfig.from_env(env)).down()  # the demo stops what it started
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "result           HEALTHY" in demo.stdout
    assert (home / "logs" / "kafka.log").exists(), "the broker's state is in STREAMSCORE_HOME"
    site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
    assert not (site / ".streamscore").exists()
    assert not (site / "kafka" / "pom.xml").exists()
