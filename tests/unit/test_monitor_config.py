"""The monitor's settings: its table, its command line, and what gunicorn is handed."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import pytest

import monitor.__main__ as entry
from core.errors import ConfigError
from monitor.config import RESOLVED_VARIABLE, SETTINGS, MonitorConfig


def test_defaults_and_variables() -> None:
    assert MonitorConfig.from_env({}) == MonitorConfig()
    assert MonitorConfig().bind == "127.0.0.1:5555"
    config = MonitorConfig.from_env(
        {
            "STREAMSCORE_MONITOR_HOST": "[::1]",
            "STREAMSCORE_MONITOR_PORT": "6000",
            "STREAMSCORE_MONITOR_GROUPS_EVERY_S": "0.5",
            "STREAMSCORE_MONITOR_THREADS": "2",
        }
    )
    assert (config.bind, config.groups_every_s, config.threads) == ("[::1]:6000", 0.5, 2)


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("STREAMSCORE_MONITOR_HOST", "0.0.0.0:5555", "without a port"),
        ("STREAMSCORE_MONITOR_HOST", "::1", "without a port"),
        ("STREAMSCORE_MONITOR_PORT", "0", "from 1 to 65535"),
        ("STREAMSCORE_MONITOR_PORT", "65536", "from 1 to 65535"),
        ("STREAMSCORE_MONITOR_REFRESH_MS", "199", "at least 200"),
        ("STREAMSCORE_MONITOR_DEADLETTERS", "0", "at least 1"),
        ("STREAMSCORE_MONITOR_SCORES_TAIL", "0", "at least 1"),
        ("STREAMSCORE_MONITOR_HISTORY", "1", "at least 2"),
        ("STREAMSCORE_MONITOR_REQUESTS_TAIL", "0", "at least 1"),
        ("STREAMSCORE_MONITOR_GROUPS_EVERY_S", "0.1", "at least 0.2"),
        ("STREAMSCORE_MONITOR_THREADS", "0", "at least 1"),
    ],
)
def test_a_bad_value_names_its_flag_and_variable(variable: str, value: str, words: str) -> None:
    flag = SETTINGS.setting(next(s.field for s in SETTINGS if s.variable == variable)).flag
    with pytest.raises(ConfigError, match=f"{flag} / {variable} = '{value}'.*{words}"):
        MonitorConfig.from_env({variable: value})


def test_a_config_built_in_code_is_checked() -> None:
    with pytest.raises(ConfigError, match="--host / STREAMSCORE_MONITOR_HOST"):
        MonitorConfig(host="")
    with pytest.raises(ConfigError, match="--history / STREAMSCORE_MONITOR_HISTORY"):
        MonitorConfig(history=1)


def test_main_hands_the_resolved_config_to_gunicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(os, "execve", lambda path, argv, env: seen.update(argv=argv, env=env))
    monkeypatch.setenv("STREAMSCORE_MONITOR_THREADS", "3")
    monkeypatch.setenv(RESOLVED_VARIABLE, '{"threads": "99"}')  # a previous run's: replaced
    assert entry.main(["--port", "6001", "--refresh-ms", "500"]) == 0
    assert seen["argv"][1:4] == ["-m", "gunicorn", "-c"]
    assert seen["argv"][4].endswith("gunicorn_conf.py") and "monitor" in seen["argv"][4]
    assert seen["argv"][5] == "monitor.app:get_app()"
    # the flags are not written back as variables: the resolved config is handed over whole
    assert "STREAMSCORE_MONITOR_PORT" not in seen["env"]
    assert "STREAMSCORE_MONITOR_REFRESH_MS" not in seen["env"]
    handed = MonitorConfig.from_env({RESOLVED_VARIABLE: seen["env"][RESOLVED_VARIABLE]})
    assert (handed.port, handed.refresh_ms, handed.threads) == (6001, 500, 3)
    # the worker side reads it from the environment gunicorn inherited; it wins
    monkeypatch.setenv(RESOLVED_VARIABLE, seen["env"][RESOLVED_VARIABLE])
    monkeypatch.setenv("STREAMSCORE_MONITOR_THREADS", "7")
    assert MonitorConfig.from_env() == handed


def test_main_refuses_bad_settings_before_gunicorn(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("must not start"))
    assert entry.main(["--host", "0.0.0.0:80"]) == 2
    assert "--host / STREAMSCORE_MONITOR_HOST = '0.0.0.0:80'" in capsys.readouterr().err
    monkeypatch.setenv("STREAMSCORE_MONITOR_PORT", "70000")
    assert entry.main([]) == 2
    assert "--port / STREAMSCORE_MONITOR_PORT = '70000'" in capsys.readouterr().err


def test_a_bad_handed_over_config_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=RESOLVED_VARIABLE):
        MonitorConfig.from_env({RESOLVED_VARIABLE: "{not json"})
    with pytest.raises(ConfigError, match="STREAMSCORE_MONITOR_PORT"):
        MonitorConfig.from_env({RESOLVED_VARIABLE: '{"port": "0"}'})
    with pytest.raises(ConfigError, match=RESOLVED_VARIABLE):
        MonitorConfig.from_env({RESOLVED_VARIABLE: '{"colour": "red"}'})


def test_gunicorn_config_reads_the_handed_over_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_MONITOR_THREADS", "3")
    handed = MonitorConfig(host="0.0.0.0", port=6002, threads=2)
    monkeypatch.setenv(RESOLVED_VARIABLE, handed.dumps())
    monkeypatch.delitem(sys.modules, "monitor.gunicorn_conf", raising=False)
    conf = importlib.import_module("monitor.gunicorn_conf")
    assert conf.bind == ["0.0.0.0:6002"] and conf.threads == 2 and conf.workers == 1
    monkeypatch.delenv(RESOLVED_VARIABLE)
    monkeypatch.delitem(sys.modules, "monitor.gunicorn_conf")
    conf = importlib.import_module("monitor.gunicorn_conf")
    assert conf.bind == ["127.0.0.1:5555"] and conf.threads == 3
