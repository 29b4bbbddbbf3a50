"""``streamscore monitor``: serve the live dashboard with gunicorn (default port 5555)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.errors import ConfigError
from monitor.config import MonitorConfig

CONF = Path(__file__).with_name("gunicorn_conf.py")
APP = "monitor.app:get_app()"


def gunicorn_command() -> list[str]:
    """The command that serves the monitor."""
    return [sys.executable, "-m", "gunicorn", "-c", str(CONF), APP]


def main(argv: list[str] | None = None) -> int:
    """Check the settings, then become gunicorn (it never returns on success)."""
    parser = argparse.ArgumentParser(
        prog="streamscore monitor",
        description=__doc__,
        epilog="Every option has an environment variable (STREAMSCORE_MONITOR_*); see README.",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 5555)")
    parser.add_argument("--refresh-ms", type=int, help="how often the page refreshes (2000)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    for name, value in vars(args).items():
        if value is not None:
            env[f"STREAMSCORE_MONITOR_{name.upper()}"] = str(value)
    try:
        config = MonitorConfig.from_env(env)
    except ConfigError as exc:
        print(f"streamscore monitor: {exc}", file=sys.stderr)
        return 2
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
