"""The gateway's settings and its entry point (`streamscore gateway`)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import pytest

import gateway.__main__ as entry
from core.errors import ConfigError
from gateway.config import GatewayConfig


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

    monkeypatch.setattr(entry.os, "execve", fake_execve)
    assert entry.main(["--workers", "3", "--bind", "127.0.0.1:9999"]) == 0
    assert seen["argv"][1:4] == ["-m", "gunicorn", "-c"]
    assert seen["argv"][4].endswith("gateway/gunicorn_conf.py")
    assert seen["argv"][5] == "gateway.app:get_app()"
    assert seen["env"]["STREAMSCORE_GATEWAY_WORKERS"] == "3"
    assert seen["env"]["STREAMSCORE_GATEWAY_BIND"] == "127.0.0.1:9999"


def test_main_refuses_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(entry.os, "execve", lambda *a: pytest.fail("must not start"))
    assert entry.main(["--bind", "nowhere"]) == 2
    assert "STREAMSCORE_GATEWAY_BIND" in capsys.readouterr().err


def test_gunicorn_config_runs_the_gateway_worker_with_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMSCORE_GATEWAY_BIND", "127.0.0.1:9911")
    monkeypatch.setenv("STREAMSCORE_GATEWAY_THREADS", "3")
    monkeypatch.delitem(sys.modules, "gateway.gunicorn_conf", raising=False)
    conf = importlib.import_module("gateway.gunicorn_conf")
    assert conf.worker_class == "gateway.worker.GatewayWorker"
    assert conf.bind == ["127.0.0.1:9911"] and conf.threads == 3
    assert conf.preload_app is False
