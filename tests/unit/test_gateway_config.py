"""The gateway's settings and its entry point (`streamscore gateway`)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import gateway.__main__ as entry
from core.errors import ConfigError
from gateway.config import RESOLVED_VARIABLE, WORKER_SLOT_VARIABLE, GatewayConfig, worker_slot


def test_defaults() -> None:
    config = GatewayConfig.from_env({})
    assert (config.bind, config.workers, config.threads) == ("127.0.0.1:8000", 4, 16)
    assert config.timeout_ms == 5000 and config.timeout_s == 5.0
    assert config.model_history == 10
    assert config.client_timeout_ms == 30_000 and config.client_timeout_s == 30.0


def test_from_env() -> None:
    config = GatewayConfig.from_env(
        {
            "STREAMSCORE_GATEWAY_BIND": "0.0.0.0:9000",
            "STREAMSCORE_GATEWAY_WORKERS": "2",
            "STREAMSCORE_GATEWAY_TIMEOUT_MS": "250",
            "STREAMSCORE_GATEWAY_MAX_PENDING": "7",
            "STREAMSCORE_GATEWAY_MAX_BODY_BYTES": "100",
            "STREAMSCORE_MODEL_HISTORY": "3",
            "STREAMSCORE_GATEWAY_CLIENT_TIMEOUT_MS": "2500",
        }
    )
    assert config.client_timeout_s == 2.5
    assert (config.bind, config.workers, config.timeout_s) == ("0.0.0.0:9000", 2, 0.25)
    assert (config.max_pending, config.max_body_bytes) == (7, 100)
    assert config.model_history == 3


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("STREAMSCORE_GATEWAY_BIND", "8000", "HOST:PORT"),
        ("STREAMSCORE_GATEWAY_WORKERS", "0", "at least 1"),
        ("STREAMSCORE_GATEWAY_TIMEOUT_MS", "soon", "integer"),
        ("STREAMSCORE_GATEWAY_CLIENT_TIMEOUT_MS", "10", "at least 100"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        GatewayConfig.from_env({name: value})
    assert name in str(caught.value)


def test_main_becomes_gunicorn_with_the_package_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        seen.update(path=path, argv=argv, env=env)

    monkeypatch.setattr(os, "execve", fake_execve)
    assert entry.main(["--workers", "3", "--bind", "127.0.0.1:9999"]) == 0
    assert seen["argv"][1:4] == ["-m", "gunicorn", "-c"]
    assert seen["argv"][4].endswith("gateway/gunicorn_conf.py")
    assert seen["argv"][5] == "gateway.app:get_app()"
    # the flags are not written back as variables: the resolved config is handed over whole
    assert "STREAMSCORE_GATEWAY_WORKERS" not in seen["env"]
    assert "STREAMSCORE_GATEWAY_BIND" not in seen["env"]
    handed = GatewayConfig.from_env({RESOLVED_VARIABLE: seen["env"][RESOLVED_VARIABLE]})
    assert (handed.workers, handed.bind, handed.threads) == (3, "127.0.0.1:9999", 16)


def test_main_hands_variables_and_flags_over_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(os, "execve", lambda path, argv, env: seen.update(env=env))
    monkeypatch.setenv("STREAMSCORE_GATEWAY_THREADS", "5")
    monkeypatch.setenv("STREAMSCORE_MODEL_HISTORY", "4")
    monkeypatch.setenv(RESOLVED_VARIABLE, '{"threads": "99"}')  # a previous run's: replaced
    assert entry.main(["--access-log", "--timeout-ms", "250"]) == 0
    config = GatewayConfig.from_env(seen["env"])
    assert (config.threads, config.model_history) == (5, 4)
    assert config.access_log is True and config.timeout_ms == 250
    # the worker side reads it from the environment gunicorn inherited
    monkeypatch.setenv(RESOLVED_VARIABLE, seen["env"][RESOLVED_VARIABLE])
    monkeypatch.setenv("STREAMSCORE_GATEWAY_THREADS", "7")  # the handed-over config wins
    assert GatewayConfig.from_env() == config


def test_a_bad_handed_over_config_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=RESOLVED_VARIABLE):
        GatewayConfig.from_env({RESOLVED_VARIABLE: "{not json"})
    with pytest.raises(ConfigError, match="STREAMSCORE_GATEWAY_WORKERS"):
        GatewayConfig.from_env({RESOLVED_VARIABLE: '{"workers": "0"}'})
    with pytest.raises(ConfigError, match=RESOLVED_VARIABLE):
        GatewayConfig.from_env({RESOLVED_VARIABLE: '{"colour": "red"}'})


def test_main_refuses_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("must not start"))
    assert entry.main(["--bind", "nowhere"]) == 2
    assert "--bind / STREAMSCORE_GATEWAY_BIND = 'nowhere'" in capsys.readouterr().err
    assert entry.main(["--workers", "0"]) == 2
    assert "--workers / STREAMSCORE_GATEWAY_WORKERS = '0'" in capsys.readouterr().err


def test_gunicorn_config_runs_the_gateway_worker_with_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # given a metrics directory, so the one gunicorn_conf would make does not outlive the test
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("STREAMSCORE_GATEWAY_BIND", "127.0.0.1:9911")
    monkeypatch.setenv("STREAMSCORE_GATEWAY_THREADS", "3")
    monkeypatch.delitem(sys.modules, "gateway.gunicorn_conf", raising=False)
    conf = importlib.import_module("gateway.gunicorn_conf")
    assert conf.worker_class == "gateway.worker.GatewayWorker"
    assert conf.bind == ["127.0.0.1:9911"] and conf.threads == 3
    assert conf.preload_app is False


def test_gunicorn_config_reads_the_handed_over_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("STREAMSCORE_GATEWAY_THREADS", "3")
    handed = GatewayConfig(bind="127.0.0.1:9912", threads=2, workers=5, access_log=True)
    monkeypatch.setenv(RESOLVED_VARIABLE, handed.dumps())
    monkeypatch.delitem(sys.modules, "gateway.gunicorn_conf", raising=False)
    conf = importlib.import_module("gateway.gunicorn_conf")
    assert conf.bind == ["127.0.0.1:9912"] and (conf.threads, conf.workers) == (2, 5)
    assert conf.accesslog == "-"


def test_the_workers_of_one_gunicorn_read_replies_partitions_of_their_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv(WORKER_SLOT_VARIABLE, "0")  # put back as it was afterwards
    conf = importlib.import_module("gateway.gunicorn_conf")
    for master_pid in (1, 4321, 65_535, 99_999):
        slots = []
        for age in range(1, 5):
            conf.post_fork(SimpleNamespace(pid=master_pid), SimpleNamespace(age=age))
            slots.append(int(os.environ[WORKER_SLOT_VARIABLE]))
        assert len({slot % 16 for slot in slots}) == 4  # 16 replies partitions by default
    assert worker_slot(100, 3) != worker_slot(200, 3)  # another gunicorn: other slots
