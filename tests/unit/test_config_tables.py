"""Every service's settings table: each setting a variable and a flag, read alike."""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections import Counter
from typing import Any

import pytest

import gateway.__main__
import monitor.__main__
import producer.__main__
import scorer.__main__
import trainer.__main__
from core.errors import ConfigError
from core.settings import Setting, SettingsTable, integer, text
from gateway.config import SETTINGS as GATEWAY
from monitor.config import SETTINGS as MONITOR
from producer.config import SETTINGS as PRODUCER
from scorer.config import SETTINGS as SCORER
from trainer.config import SETTINGS as TRAINER

#: service -> (its table, its command line).
SERVICES: dict[str, tuple[SettingsTable[Any], argparse.ArgumentParser]] = {
    "producer": (PRODUCER, producer.__main__.build_parser()),
    "gateway": (GATEWAY, gateway.__main__.build_parser()),
    "scorer": (SCORER, scorer.__main__.build_parser()),
    "trainer": (TRAINER, trainer.__main__.build_parser()),
    "monitor": (MONITOR, monitor.__main__.build_parser()),
}
#: Variables two services read on purpose (and must be set the same for both).
SHARED = {"STREAMSCORE_MODEL_HISTORY"}
#: Texts tried on every setting: each must be taken, or refused, alike by both ways.
CANDIDATES = ["", " ", "0", "1", "-1", "2.5", "1e400", "nan", "abc", "a#b", "true", "10000"]

CASES = [
    pytest.param(service, s, id=f"{service}:{s.field}")
    for service, (table, _) in SERVICES.items()
    for s in table
]


def _help(parser: argparse.ArgumentParser) -> str:
    return "".join(parser.format_help().split())  # no spaces: lines wrap at spaces and dashes


@pytest.mark.parametrize(("service", "setting"), CASES)
def test_every_setting_has_a_variable_and_a_flag_shown_in_help(
    service: str, setting: Setting
) -> None:
    table, parser = SERVICES[service]
    assert setting.variable.startswith("STREAMSCORE_")
    assert setting.flag.startswith("--") and setting.flag == setting.flag.lower()
    shown = _help(parser)
    assert setting.flag in shown
    default = table.shown_default(setting)
    assert "".join(f"[{setting.variable}; default: {default}]".split()) in shown
    assert "``" not in shown, "help is plain text"


@pytest.mark.parametrize(("service", "setting"), CASES)
def test_a_flag_is_read_and_checked_like_its_variable(service: str, setting: Setting) -> None:
    table, parser = SERVICES[service]
    if isinstance(table.defaults[setting.field], bool):
        on = table.parse_args(parser, [setting.flag], {})
        off = table.parse_args(parser, ["--no-" + setting.flag[2:]], {})
        assert getattr(on, setting.field) is True and getattr(off, setting.field) is False
        assert table.load({setting.variable: "true"}) == on
        with pytest.raises(ConfigError, match=f"{setting.flag} / {setting.variable}"):
            table.load({setting.variable: "maybe"})
        return
    refused = 0
    for raw in CANDIDATES:
        if not raw.strip() and not setting.verbatim:
            continue  # a blank variable is unset (the default); a blank flag is a value
        try:
            from_env = table.load({setting.variable: raw})
        except ConfigError as exc:
            refused += 1
            with pytest.raises(ConfigError) as caught:
                table.parse_args(parser, [f"{setting.flag}={raw}"], {})
            assert str(caught.value) == str(exc)
            assert f"{setting.flag} / {setting.variable} = " in str(exc)
            continue
        assert table.parse_args(parser, [f"{setting.flag}={raw}"], {}) == from_env, raw
    if isinstance(table.defaults[setting.field], int | float):
        assert refused, "a number refuses some texts"


@pytest.mark.parametrize(("service", "setting"), CASES)
def test_the_default_is_a_value_the_setting_accepts(service: str, setting: Setting) -> None:
    table, _ = SERVICES[service]
    config = table.config()
    default = getattr(config, setting.field)
    if default is not None:
        again = table.load({setting.variable: setting.text_of(default)})
        assert getattr(again, setting.field) == default


@pytest.mark.parametrize("service", SERVICES)
def test_every_field_is_a_setting_or_declared_in_code(service: str) -> None:
    table, _ = SERVICES[service]
    fields = {f.name for f in dataclasses.fields(table.config)}
    assert fields == {s.field for s in table} | set(table.in_code)
    assert table.load({}) == table.config()


def test_no_two_settings_share_a_variable_or_a_flag() -> None:
    for table, _ in SERVICES.values():
        assert len({s.variable for s in table}) == len(table.settings)
        flags = [f for s in table for f in (s.flag, *s.aliases)]
        assert len(set(flags)) == len(flags)
    counts = Counter(s.variable for table, _ in SERVICES.values() for s in table)
    assert {v for v, n in counts.items() if n > 1} <= SHARED


@dataclasses.dataclass(frozen=True)
class _Two:
    size: int = 1
    name: str = "a"


def test_a_table_refuses_a_shared_variable_and_a_field_without_setting() -> None:
    with pytest.raises(ConfigError, match="variable used by two settings"):
        SettingsTable(
            _Two,
            "X_",
            [Setting("size", "X_SIZE", integer(), "n"), Setting("name", "X_SIZE", text(), "t")],
        )
    with pytest.raises(ConfigError, match="fields without a setting: \\['name'\\]"):
        SettingsTable(_Two, "X_", [Setting("size", "X_SIZE", integer(), "n")])


def test_a_bad_value_says_what_is_allowed() -> None:
    table = SettingsTable(
        _Two, "X_", [Setting("size", "X_SIZE", integer(minimum=2), "n")], in_code=("name",)
    )
    with pytest.raises(ConfigError) as caught:
        table.load({"X_SIZE": "1"})
    assert str(caught.value) == "--size / X_SIZE = '1': expected an integer, at least 2"
    with pytest.raises(ConfigError, match="--size / X_SIZE = 'big': expected an integer"):
        table.parse_args(table.parser("x", None), ["--size", "big"], {})
    assert table.parse_args(table.parser("x", None), ["--size", "3"], {"X_SIZE": "5"}).size == 3
    assert table.loads(table.dumps(_Two(size=7))) == _Two(size=7)


# --- the scorer ---------------------------------------------------------------------


def test_the_scorer_has_one_transactional_id_default() -> None:
    from scorer.config import ScorerConfig, default_transactional_id

    assert ScorerConfig().transactional_id == default_transactional_id()
    assert ScorerConfig.from_env({}) == ScorerConfig()
    assert default_transactional_id().startswith("streamscore-scorer-")


def test_the_scorer_reads_the_model_history_the_gateway_reads() -> None:
    from gateway.config import GatewayConfig
    from scorer.config import ScorerConfig

    env = {"STREAMSCORE_MODEL_HISTORY": "3"}
    assert (
        ScorerConfig.from_env(env).model_history == 3 == GatewayConfig.from_env(env).model_history
    )
    with pytest.raises(ConfigError, match="--model-history / STREAMSCORE_MODEL_HISTORY = '0'"):
        ScorerConfig.from_env({"STREAMSCORE_MODEL_HISTORY": "0"})


@pytest.mark.parametrize("policy", ["best", "polynomial", "cubic.v2", "m_1-x"])
def test_the_scorer_policy_is_best_or_a_model_name(policy: str) -> None:
    parser = scorer.__main__.build_parser()
    assert SCORER.parse_args(parser, ["--policy", policy], {}).policy == policy


@pytest.mark.parametrize("policy", ["", "Best model", "poly/3", "-x", "x" * 129])
def test_a_policy_that_names_no_model_is_refused(policy: str) -> None:
    parser = scorer.__main__.build_parser()
    with pytest.raises(
        ConfigError, match=r"--policy / STREAMSCORE_SCORER_POLICY = .*expected best"
    ):
        SCORER.parse_args(parser, [f"--policy={policy}"], {})
    if policy:
        with pytest.raises(ConfigError, match="STREAMSCORE_SCORER_POLICY"):
            SCORER.load({"STREAMSCORE_SCORER_POLICY": policy})


def test_the_scorer_refuses_a_bad_flag_before_it_connects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert scorer.__main__.main(["--window", "0"]) == 2
    err = capsys.readouterr().err
    assert "--window / STREAMSCORE_SCORER_WINDOW = '0': expected an integer" in err
    assert scorer.__main__.main(["--policy", "no such model!"]) == 2
    assert "--policy / STREAMSCORE_SCORER_POLICY" in capsys.readouterr().err


# --- the README ---------------------------------------------------------------------


def _readme_rows() -> dict[str, tuple[str, str]]:
    """README settings rows: variable -> (its flags cell, its default cell)."""
    from pathlib import Path

    rows: dict[str, tuple[str, str]] = {}
    for line in (Path(__file__).parents[2] / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if len(cells) == 3 and cells[0].startswith("`STREAMSCORE_"):
            variable, _, flags = cells[0].partition(" ")
            rows[variable.strip("`")] = (flags, cells[1].replace("`", ""))
    return rows


@pytest.mark.parametrize(("service", "setting"), CASES)
def test_the_readme_lists_each_setting_with_its_flag_and_default(
    service: str, setting: Setting
) -> None:
    table, _ = SERVICES[service]
    rows = _readme_rows()
    assert setting.variable in rows, f"README: no row for {setting.variable}"
    flags, default = rows[setting.variable]
    assert flags.split(", ") == [f"`{f}`" for f in (setting.flag, *setting.aliases)]
    assert default == table.shown_default(setting)


# --- model names: one rule for the trainer's names and the scorer's policy ----------


@pytest.mark.parametrize("name", ["m", "polynomial", "cubic.v2", "m_1-x", "7", "x" * 128])
def test_a_model_name_is_taken_by_the_rule_the_trainer_and_the_scorer_share(name: str) -> None:
    from bus.messages import is_model_name
    from trainer.config import parse_models

    assert is_model_name(name)
    assert parse_models(f"{name}=multivariate")[0].name == name
    assert SCORER.load({"STREAMSCORE_SCORER_POLICY": name}).policy == name


@pytest.mark.parametrize("name", ["", "-x", ".x", "a b", "poly/3", "é", "x" * 129, "poly\n"])
def test_a_model_name_outside_the_rule_is_refused_by_both(name: str) -> None:
    from bus.messages import MODEL_NAME_RULE, is_model_name
    from trainer.config import parse_models

    assert not is_model_name(name)
    if name.strip() == name and name:  # settings strip their text: a newline never gets here
        with pytest.raises(ConfigError, match=re.escape(MODEL_NAME_RULE)):
            parse_models(f"{name}=multivariate")
        with pytest.raises(ConfigError, match=re.escape(MODEL_NAME_RULE)):
            SCORER.load({"STREAMSCORE_SCORER_POLICY": name})
