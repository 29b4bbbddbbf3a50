"""The ``streamscore`` command: subcommands, help, version, dispatch and its checks."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from importlib import metadata

import pytest

from streamscore import cli

SERVICE_PACKAGES = ("producer", "trainer", "scorer", "gateway", "monitor")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m streamscore <args>`` in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "streamscore", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version_is_the_installed_package_version() -> None:
    answer = run("--version")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == f"streamscore {metadata.version('streamscore')}"


@pytest.mark.parametrize("command", ["up", "down", "status"])
def test_each_lifecycle_command_has_its_own_help(command: str) -> None:
    answer = run(command, "--help")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith(f"usage: streamscore {command} [-h]")
    assert "{up,down,status}" not in answer.stdout


@pytest.mark.parametrize("command", ["", "kafka", "topics", "demo", "up", "down", "status"])
def test_help_screens_show_no_rst_markup(command: str) -> None:
    answer = run(*([command] if command else []), "--help")
    assert answer.returncode == 0, answer.stderr
    assert "usage: streamscore" in answer.stdout
    assert "``" not in answer.stdout


def test_every_command_is_listed_in_the_help() -> None:
    shown = run("--help").stdout
    for command in cli.COMMANDS:
        assert f"    {command.name:<9} {command.help}" in shown, command.name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--points", "0"], "--points: 0 is not a positive number"),
        (["demo", "--points", "many"], "--points: 'many' is not a whole number"),
        (["demo", "--rate", "-5"], "--rate: -5 is not a positive finite number"),
        (["up", "--now"], "unrecognized arguments: --now"),
        (["serve"], "invalid choice: 'serve'"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ran: list[str] = []
    monkeypatch.setattr(cli.Command, "run", lambda self, argv: ran.append(self.name) or 0)
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert ran == []


def test_bad_arguments_say_what_is_wrong() -> None:
    answer = run("demo", "--points", "0")
    assert answer.returncode == 2
    assert "argument --points: 0 is not a positive number (at least 1)" in answer.stderr


def test_the_monitor_is_imported_only_when_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("monitor.__main__")

    def main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    fake.main = main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "monitor", types.ModuleType("monitor"))
    monkeypatch.setitem(sys.modules, "monitor.__main__", fake)
    assert cli.main(["monitor", "--port", "8001", "--help"]) == 7
    assert seen == [["--port", "8001", "--help"]]


def test_parsing_imports_no_service() -> None:
    probe = (
        "import sys; from streamscore import cli; cli.build_parser().parse_known_args(['status']);"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {SERVICE_PACKAGES!r}))"
    )
    answer = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert answer.stdout.strip() == "[]"


def test_passthrough_commands_get_the_rest_of_the_line(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, list[str]]] = []

    def fake_run(self: cli.Command, argv: list[str]) -> int:
        seen.append((self.name, argv))
        return 0

    monkeypatch.setattr(cli.Command, "run", fake_run)
    assert cli.main(["kafka", "up", "--brokers", "3"]) == 0
    assert cli.main(["producer", "--count", "5", "--version"]) == 0
    assert cli.main(["demo", "--points", "10"]) == 0
    assert seen == [
        ("kafka", ["up", "--brokers", "3"]),
        ("producer", ["--count", "5", "--version"]),
        ("demo", ["--points", "10"]),
    ]


def test_blas_threads_are_limited_for_every_command(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.setattr(cli.Command, "run", lambda self, argv: 0)
    cli.main(["topics"])
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert os.environ["MKL_NUM_THREADS"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "4"  # the user's choice stays
