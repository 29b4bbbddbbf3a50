"""streamscore monitor: serve the live dashboard with gunicorn (default port 5555).

The settings are read once here (variables, then flags) and handed to gunicorn
and its worker whole, in STREAMSCORE_MONITOR_CONFIG.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.errors import ConfigError
from monitor.config import RESOLVED_VARIABLE, SETTINGS, MonitorConfig

CONF = Path(__file__).with_name("gunicorn_conf.py")
APP = "monitor.app:get_app()"


def gunicorn_command() -> list[str]:
    """The command that serves the monitor."""
    return [sys.executable, "-m", "gunicorn", "-c", str(CONF), APP]


def build_parser() -> argparse.ArgumentParser:
    """The command line: one flag per setting of `monitor.config.SETTINGS`."""
    return SETTINGS.parser("streamscore monitor", __doc__)


def main(argv: list[str] | None = None) -> int:
    """Check the settings, then become gunicorn (it never returns on success)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    env = {k: v for k, v in os.environ.items() if k != RESOLVED_VARIABLE}
    try:
        config = MonitorConfig.from_env(env, SETTINGS.overrides(args))
    except ConfigError as exc:
        print(f"streamscore monitor: {exc}", file=sys.stderr)
        return 2
    env[RESOLVED_VARIABLE] = config.dumps()
    print(f"streamscore monitor: http://{config.bind}/", file=sys.stderr, flush=True)
    command = gunicorn_command()
    try:
        os.execve(command[0], command, env)
    except OSError as exc:
        print(f"streamscore monitor: cannot start gunicorn: {exc}", file=sys.stderr)
        return 1
    return 0  # pragma: no cover - execve does not return


if __name__ == "__main__":
    sys.exit(main())
