"""``streamscore demo`` and ``streamscore up | status | down`` as a user runs them."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bus.settings import KafkaSettings
from streamscore.broker import free_port
from tests.integration.streams import run_streamscore, service_env


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if marker.encode() in environ.split(b"\0") and state != "Z":
            found.append(int(proc.name))
    return found


def test_demo_is_healthy_and_leaves_nothing_behind(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    env = {
        **service_env(kafka_settings, None),
        "STREAMSCORE_HOME": str(tmp_path),
        "STREAMSCORE_DEMO_POINTS": "6000",
        "STREAMSCORE_DEMO_RATE": "3000",
        "STREAMSCORE_DEMO_DRIFT_AFTER": "3000",
        "STREAMSCORE_DEMO_PUBLISH_EVERY": "1000",
    }
    result = run_streamscore(env, "demo")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "result           HEALTHY" in result.stdout
    assert "predictions out  6000 distinct ids" in result.stdout
    assert '"prediction"' in result.stdout, "the gateway's answer is shown"
    assert processes_with(f"STREAMSCORE_HOME={tmp_path}") == []


def test_up_status_down(
    kafka_settings: KafkaSettings, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    port = free_port()
    env = {
        **service_env(kafka_settings, None),
        "STREAMSCORE_HOME": str(tmp_path),
        "STREAMSCORE_TOPIC_PREFIX": unique_name("up") + ".",
        "STREAMSCORE_TRAINER_GROUP": unique_name("trainer"),
        "STREAMSCORE_TRAINER_TRANSACTIONAL_ID": unique_name("trainer-tx"),
        "STREAMSCORE_SCORER_GROUP": unique_name("scorer"),
        "STREAMSCORE_GATEWAY_BIND": f"127.0.0.1:{port}",
        "STREAMSCORE_GATEWAY_WORKERS": "2",
        "STREAMSCORE_MONITOR_PORT": str(free_port()),
    }
    try:
        up = run_streamscore(env, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        for name in ("trainer", "scorer", "gateway"):
            assert f"{name}: running" in up.stdout
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    assert json.loads(r.read()) == {"ping": "pong"}
                    break
            except OSError:
                assert time.monotonic() < deadline, "the gateway did not answer /ping"
                time.sleep(0.5)
        status = run_streamscore(env, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        for name in ("trainer", "scorer", "gateway"):
            assert any(line.split()[:2] == [name, "up"] for line in status.stdout.splitlines()), (
                status.stdout
            )
        assert env["STREAMSCORE_TOPIC_PREFIX"] + "points" in status.stdout
        assert "consumer groups (lag):" in status.stdout
    finally:
        down = run_streamscore(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped:" in down.stdout
    assert processes_with(f"STREAMSCORE_HOME={tmp_path}") == []
    after = run_streamscore(env, "status")
    assert after.returncode == 3, "status says not everything is up"
    assert "trainer    down" in after.stdout
